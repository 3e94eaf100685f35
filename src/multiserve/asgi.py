"""An ASGI 3 application (``http`` and ``lifespan`` scopes) as a multiserve service.

The adapter offers only the coroutine call paths, so the event-loop engines (``asyncio``,
``hybrid``'s workers) run the app on their loop: ``handle_soon`` starts the app's task and calls
back with the response (one task per request, as uvicorn's; measured in docs/benchmarks.md), and
``handle_async`` awaits the same; the other engines are refused at start (``ASGI_ENGINES``).
The HTTP protocol parsed the request (body included, bounded by ``--max-body``) and writes the
:class:`~multiserve.protocol.http.Response` returned here.

- ``receive()`` gives the whole body as one ``http.request`` message, then waits until the
  response is sent and says ``http.disconnect``.
- ``send()``: ``http.response.start``, then ``http.response.body`` messages. A response whose
  first body message is its last is known whole (a Content-Length, one write) and answered once
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
import re
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

import httptools

from .protocol.http import Response
from .services.base import Service

log = logging.getLogger(__name__)

ASGI_ENGINES = ("asyncio", "hybrid", "multiloop")
# RFC 9110 5.1 / 5.5: a field name is a token; a value has no control characters but tab (no
# response splitting). The same checks as uvicorn's httptools protocol.
_BAD_NAME = re.compile(rb'[\x00-\x20\x7f()<>@,;:\[\]={}\\"/?]')
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DONE = object()
# the reason phrase of each status: HTTPStatus(status) is an enum look-up through Python code
_REASONS = {status.value: status.phrase for status in HTTPStatus}


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
        target = request.target
        if target[:1] == b"/" and b"#" not in target:  # origin-form, what parse_url would give
            raw_path, _, query = target.partition(b"?")
        else:
            try:
                url = httptools.parse_url(target)
                raw_path, query = url.path or b"/", url.query or b""
            except httptools.HttpParserInvalidURLError:  # asterisk- or authority-form
                raw_path, _, query = target.partition(b"?")
        peer = conn.peer if conn is not None else None
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.version,
            "method": request.method,
            "scheme": "http",
            "path": (unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path).decode("utf-8", "replace"),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": request.headers,
            "client": tuple(peer[:2]) if isinstance(peer, tuple) and len(peer) >= 2 else None,
            "server": self.server,
            "state": dict(self.state),
        }

    def handle_soon(self, request, conn, done):
        """Start the app on ``request``; ``done(response, exc)`` is called once on the loop, with
        the :class:`Response` (whole, or streaming as soon as the first piece is in) or the
        exception that stands for a 500. Returns the app's task (cancel it to abandon the
        request: ``done`` is then never called). One task per request, none of the server's
        (the session's ``answer_soon``; ``handle_async`` is the same, awaited)."""
        loop = asyncio.get_running_loop()
        exchange = Exchange(loop, request.body, done)
        task = exchange.task = loop.create_task(exchange.run(self.app, self.scope(request, conn)))
        return task

    async def handle_async(self, request, conn) -> Response:
        answer = asyncio.get_running_loop().create_future()

        def done(response, exc):
            if not answer.done():
                answer.set_result(response) if exc is None else answer.set_exception(exc)

        app_task = self.handle_soon(request, conn, done)
        try:
            return await answer
        except BaseException:
            app_task.cancel()
            raise


def _response(start, body) -> Response:
    status = int(start["status"])
    headers = []
    bad_name, bad_value = _BAD_NAME.search, _BAD_VALUE.search
    for name, value in start.get("headers", ()):
        name, value = bytes(name), bytes(value)
        if bad_name(name) or bad_value(value) or not name:
            raise ValueError(f"invalid response header {name!r}: {value!r}")
        headers.append((name, value))
    return Response(status, _REASONS.get(status, ""), headers, body)


class Exchange:
    """One request's ``receive``/``send`` pair and what the app sent. ``done`` gets the response
    when the app ends (a whole body: its first body message was its last), or at the first body
    message when more follow (streamed); later pieces wait in a one-slot queue, so the app's
    ``send`` waits for the engine to take each (backpressure)."""

    __slots__ = ("loop", "body", "body_given", "start", "first", "more", "sent", "done", "task", "pieces",
                 "finished")

    def __init__(self, loop, body: bytes, done):
        self.loop = loop
        self.body = body
        self.body_given = False
        self.start = None
        self.first = b""
        self.more = False
        self.sent = False  # the first body message is in
        self.done = done   # None once called
        self.task = None
        self.pieces = None  # an asyncio.Queue(1) once the response streams
        self.finished = None  # what receive() waits on after the body: the response is done

    async def receive(self):
        if not self.body_given:
            self.body_given = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if self.finished is None:
            self.finished = self.loop.create_future()
            if self.sent and not self.more:
                self.finished.set_result(None)
        await asyncio.shield(self.finished)
        return {"type": "http.disconnect"}

    async def send(self, message):
        kind = message["type"]
        if kind == "http.response.start":
            if self.start is not None:
                raise RuntimeError("ASGI app sent http.response.start twice")
            self.start = message
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an http scope")
        if self.start is None:
            raise RuntimeError("ASGI app sent http.response.body before http.response.start")
        more = message.get("more_body", False)
        body = bytes(message.get("body", b""))
        if not self.sent:
            self.sent = True
            self.first, self.more = body, more
            if more:  # streamed: the engine has it now and pulls the rest (a bad header raises here)
                response = _response(self.start, self.stream())
                self.pieces = asyncio.Queue(1)
                self._answer(response, None)
        elif self.pieces is None:
            raise RuntimeError("ASGI app sent a body after its last piece")
        else:
            await self.pieces.put((body, more))
        if not more and self.finished is not None and not self.finished.done():  # _finish(), inline
            self.finished.set_result(None)

    async def run(self, app, scope) -> None:
        """The app's task: the app, then the answer from inside that task (a whole body, or an
        error before the first piece), so no done-callback runs per request; a streamed
        response's stream is woken instead. A cancelled app (the client left) answers nothing."""
        try:
            await app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            self.done = None
            raise
        except Exception as exc:
            if self.done is None:  # streamed: the error surfaces in the stream (its task's result)
                self._wake_stream()
                raise
            error = exc
        else:
            if self.done is None:
                self._wake_stream()
                return
            error = None
            if self.start is None:
                error = RuntimeError("ASGI app returned without sending http.response.start")
            else:
                try:
                    response = _response(self.start, self.first)
                except ValueError as bad:
                    error = bad
        done, self.done = self.done, None
        if error is not None:
            done(None, error)
        else:
            done(response, None)

    def _wake_stream(self) -> None:
        if self.pieces is not None and not self.pieces.full():
            self.pieces.put_nowait(_DONE)  # wakes the stream if it waits for a piece

    def _answer(self, response, exc) -> None:
        done, self.done = self.done, None
        done(response, exc)

    def _finish(self) -> None:
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    async def stream(self):
        """The streamed body: the first piece, then each one the app sends; the app's error
        surfaces here (the stream is cut); the app is cancelled if the engine stops early."""
        app_task = self.task
        try:
            yield self.first
            more = True
            while more:
                if app_task.done() and self.pieces.empty():
                    item = _DONE  # it ended while its last piece sat in the queue (run saw it full)
                else:
                    item = await self.pieces.get()
                if item is _DONE:  # the app ended before its last piece
                    app_task.result()  # raises its error
                    raise RuntimeError("ASGI app returned before its last body piece")
                body, more = item
                if body:
                    yield body
            if not app_task.done():
                await app_task
            app_task.result()
        finally:
            self._finish()
            if not app_task.done():
                app_task.cancel()



