"""An ASGI 3 application (``http`` and ``lifespan`` scopes) as a multiserve service.

The adapter offers only ``handle_async``, so the event-loop engines (``asyncio``, ``hybrid``'s
workers) await the app on their loop; the other engines are refused at start (``ASGI_ENGINES``).
The HTTP protocol parsed the request (body included, bounded by ``--max-body``) and writes the
:class:`~multiserve.protocol.http.Response` returned here.

- ``receive()`` gives the whole body as one ``http.request`` message, then waits until the
  response is sent and says ``http.disconnect``.
- ``send()``: ``http.response.start``, then ``http.response.body`` messages. A response whose
  first body message is its last is known whole (a Content-Length, one write) and returned once
  the app returns, so an app error up to there is a plain 500. Otherwise the response streams:
  each later body message is handed to the engine as it comes, and the app's ``send`` waits
  until the previous piece was taken (backpressure: nothing accumulates here); an error after
  the first piece cuts the response and closes the connection (the session logs it).
- ``lifespan``: ``open_async()`` runs ``lifespan.startup`` on the serving loop before the server
  accepts (a ``startup.failed`` stops the server with one line); ``close_async()`` runs
  ``lifespan.shutdown`` after the drain. An app that does not speak lifespan (raises, or returns,
  on that scope) is served without it, as uvicorn's ``--lifespan auto`` does. ``scope["state"]``
  is a copy of the lifespan state per request.
"""
from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

import httptools

from .protocol.http import Response
from .services.base import Service

log = logging.getLogger(__name__)

ASGI_ENGINES = ("asyncio", "hybrid")
_DONE = object()


class ASGIService(Service):
    """Serves one ASGI 3 ``app``; ``server`` is the (host, port) put in each scope."""

    blocking = False
    interface = "asgi"

    def __init__(self, app, server=("127.0.0.1", 8080)):
        self.app = app
        self.server = server
        self.state = {}
        self._lifespan = None  # (task, messages to the app, replies from it) while it runs

    # -- lifespan ---------------------------------------------------------------------------------
    async def open_async(self) -> None:
        to_app, from_app = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}, "state": self.state}

        async def run():
            try:
                await self.app(scope, to_app.get, from_app.put)
            except BaseException as exc:  # noqa: BLE001 - an app without lifespan support raises here
                await from_app.put({"type": "_failed", "exc": exc})
                return
            await from_app.put({"type": "_returned"})

        task = asyncio.get_running_loop().create_task(run())
        await to_app.put({"type": "lifespan.startup"})
        reply = await from_app.get()
        if reply["type"] == "lifespan.startup.complete":
            self._lifespan = (task, to_app, from_app)
            return
        if reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"ASGI lifespan startup failed: {reply.get('message', '')}")
        # raised or returned without taking part: the app does not do lifespan
        if reply["type"] == "_failed":
            log.info("ASGI app does not support lifespan (%s: %s); serving without it",
                     type(reply["exc"]).__name__, reply["exc"])

    async def close_async(self) -> None:
        if self._lifespan is None:
            return
        task, to_app, from_app = self._lifespan
        self._lifespan = None
        await to_app.put({"type": "lifespan.shutdown"})
        reply = await from_app.get()
        if reply["type"] == "lifespan.shutdown.failed":
            log.error("ASGI lifespan shutdown failed: %s", reply.get("message", ""))
        elif reply["type"] == "_failed":
            log.error("ASGI lifespan shutdown raised %s: %s", type(reply["exc"]).__name__, reply["exc"])
        task.cancel()

    # -- http -----------------------------------------------------------------------------------
    def scope(self, request, conn) -> dict:
        try:
            url = httptools.parse_url(request.target)
            raw_path, query = url.path or b"/", url.query or b""
        except httptools.HttpParserInvalidURLError:  # asterisk- or authority-form
            raw_path, _, query = request.target.partition(b"?")
        peer = conn.peer if conn is not None else None
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.version,
            "method": request.method,
            "scheme": "http",
            "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": request.headers,
            "client": tuple(peer[:2]) if isinstance(peer, tuple) and len(peer) >= 2 else None,
            "server": self.server,
            "state": dict(self.state),
        }

    async def handle_async(self, request, conn) -> Response:
        loop = asyncio.get_running_loop()
        finished = loop.create_future()  # the response is complete: receive() says disconnect
        pieces: asyncio.Queue = asyncio.Queue(maxsize=1)
        start = {}
        body_given = False

        async def receive():
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await asyncio.shield(finished)
            return {"type": "http.disconnect"}

        async def send(message):
            kind = message["type"]
            if kind == "http.response.start":
                if start:
                    raise RuntimeError("ASGI app sent http.response.start twice")
                start.update(message)
            elif kind == "http.response.body":
                if not start:
                    raise RuntimeError("ASGI app sent http.response.body before http.response.start")
                if finished.done():
                    raise RuntimeError("ASGI app sent a body after its last piece")
                more = message.get("more_body", False)
                await pieces.put((bytes(message.get("body", b"")), more))
                if not more:
                    finished.set_result(None)

        app_task = loop.create_task(self.app(self.scope(request, conn), receive, send))
        first = loop.create_task(pieces.get())
        try:
            await asyncio.wait({app_task, first}, return_when=asyncio.FIRST_COMPLETED)
            if not first.done():  # the app returned (or raised) before any body
                app_task.result()  # raises the app's error
                first.cancel()
                if not start:
                    raise RuntimeError("ASGI app returned without sending http.response.start")
                finished.set_result(None)
                return self._response(start, b"")
            body, more = first.result()
            if not more:
                await app_task  # an error up to the app's return is still a 500
                return self._response(start, body)
        except BaseException:
            first.cancel()
            app_task.cancel()
            raise
        return self._response(start, self._rest(body, pieces, app_task, finished))

    @staticmethod
    async def _rest(first, pieces, app_task, finished):
        """The streamed body after its first piece; the app's errors surface here."""
        try:
            yield first
            while True:
                getting = asyncio.ensure_future(pieces.get())
                await asyncio.wait({getting, app_task}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    app_task.result()  # raised: the stream is cut
                    raise RuntimeError("ASGI app returned before its last body piece")
                body, more = getting.result()
                if body:
                    yield body
                if not more:
                    break
            await app_task
        finally:
            if not finished.done():
                finished.set_result(None)
            if not app_task.done():
                app_task.cancel()

    @staticmethod
    def _response(start, body) -> Response:
        status = int(start["status"])
        headers = [(bytes(name), bytes(value)) for name, value in start.get("headers", ())]
        for name, value in headers:
            if any(c in name or c in value for c in (b"\r", b"\n", b"\0")) or b":" in name:
                raise ValueError(f"invalid response header {name!r}: {value!r}")
        return Response(status, _reason(status), headers, body)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
