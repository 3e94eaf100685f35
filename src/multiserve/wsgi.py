"""A WSGI application (PEP 3333) as a multiserve service: ``handle(request, conn)`` calls the app.

The adapter is a service like any other (``blocking = True``), so every engine runs the app where
it runs blocking code: the connection's thread or process, the greenlet, the event-loop engines'
thread pool, hybrid's workers. The HTTP protocol (``multiserve.protocol.http``) parsed the request
and writes the :class:`~multiserve.protocol.http.Response` this returns.

What the adapter guarantees, per PEP 3333:

- ``environ``: the CGI keys, ``HTTP_*`` for each header (repeated headers joined with ``,``;
  a header whose name holds ``_`` is dropped, as gunicorn and nginx do, so ``X_Forwarded`` cannot
  pose as ``X-Forwarded``), ``wsgi.input`` a ``BytesIO`` of the whole body (the protocol bounded it
  by ``--max-body``) and ``wsgi.input_terminated`` True, so reading to EOF is safe; a chunked
  body, already decoded, also gets its ``CONTENT_LENGTH``, for apps that read exactly that much.
- ``start_response(status, headers, exc_info=None)`` checks its arguments (str, latin-1, no CR/LF:
  no response splitting) and returns ``write``; with ``exc_info`` it replaces the headers if
  nothing was sent yet, and re-raises otherwise; a second call without it is an error.
- The headers are committed at the first non-empty body piece (or the end of the body); until
  then an app error is a plain 500. The first piece is pulled here, on the app's thread; the rest
  are pulled as the engine writes them (a streamed body is never held whole).
- The iterable's ``close()`` is always called: after the body is written, when the app fails,
  and when the client goes away mid-body (the protocol's generator runs it on close).

An exception from the app is raised out of ``handle``: the session logs it (with its traceback
the first time) and the protocol answers 500.
"""
from __future__ import annotations

import io
import sys
from urllib.parse import unquote_to_bytes

import httptools

from .protocol.http import Response
from .services.base import Service

# engines whose app calls may overlap in threads of one process, or run in several processes
MULTITHREAD_ENGINES = frozenset({"thread", "threadpool", "asyncio", "hybrid", "multiloop"})
MULTIPROCESS_ENGINES = frozenset({"process", "hybrid"})
_BAD_HEADER_CHARS = ("\r", "\n", "\0")


class StartResponse:
    """One request's ``start_response`` and ``write`` (PEP 3333), and what the app said."""

    __slots__ = ("status", "reason", "headers", "sent", "written")

    def __init__(self):
        self.status = None
        self.reason = ""
        self.headers = None
        self.sent = False  # the status and headers are committed (a body piece is out)
        self.written = []  # pieces given to write(), sent before the iterable's

    def __call__(self, status, response_headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback (PEP 3333)
        elif self.status is not None:
            raise RuntimeError("start_response called a second time without exc_info")
        if type(status) is not str or len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
            raise ValueError(f"status must be a str like '200 OK', got {status!r}")
        headers = []
        for item in response_headers:
            if type(item) is not tuple or len(item) != 2:
                raise ValueError(f"a response header must be a (name, value) tuple, got {item!r}")
            name, value = item
            if type(name) is not str or type(value) is not str:
                raise ValueError(f"header names and values must be str, got {item!r}")
            if not name or any(c in name or c in value for c in _BAD_HEADER_CHARS) or ":" in name or " " in name:
                raise ValueError(f"invalid response header {item!r}")
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
        self.status = int(status[:3])
        self.reason = status[4:]
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy imperative body (PEP 3333): buffered in order before the iterable's pieces."""
        if self.status is None:
            raise RuntimeError("write() before start_response()")
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        self.written.append(data)


# The environ key of each request header name seen (lower-cased bytes -> "HTTP_USER_AGENT",
# "" for a name holding "_"), made once per name rather than per request; bounded, since
# clients choose the names.
_CONTENT_TYPE, _CONTENT_LENGTH, _HTTP_HOST = "CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_HOST"
_ENVIRON_KEYS = {b"content-type": _CONTENT_TYPE, b"content-length": _CONTENT_LENGTH, b"host": _HTTP_HOST}
_ENVIRON_KEYS_MAX = 1024


def _environ_key(name: bytes) -> str:
    key = "" if b"_" in name else "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
    if len(_ENVIRON_KEYS) < _ENVIRON_KEYS_MAX:
        _ENVIRON_KEYS[name] = key
    return key


def _close_quietly(result) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _pieces(first: bytes, iterator, state: StartResponse):
    """The body after its first piece: ``first``, then the iterator's, each after whatever the
    app passed to ``write()`` meanwhile."""
    yield first
    written = state.written
    for piece in iterator:
        if written:
            yield from written
            written.clear()
        yield piece
    if written:
        yield from written
        written.clear()


class WSGIService(Service):
    """Serves one WSGI ``app``. ``server_name``/``server_port``: SERVER_NAME/SERVER_PORT when the
    request has no Host header; ``engine``: for ``wsgi.multithread``/``wsgi.multiprocess``."""

    blocking = True
    interface = "wsgi"

    def __init__(self, app, server_name: str = "127.0.0.1", server_port: int = 8080, engine: str = "thread"):
        self.app = app
        self.base = {
            "SCRIPT_NAME": "",
            "SERVER_NAME": server_name,
            "SERVER_PORT": str(server_port),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": engine in MULTITHREAD_ENGINES,
            "wsgi.multiprocess": engine in MULTIPROCESS_ENGINES,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    def environ(self, request, conn) -> dict:
        """The PEP 3333 environ of ``request`` (a :class:`~multiserve.protocol.http.Request`)."""
        env = self.base.copy()
        target = request.target
        if target[:1] == b"/" and b"#" not in target:  # origin-form: what parse_url would give
            path, _, query = target.partition(b"?")
        else:
            try:
                url = httptools.parse_url(target)  # absolute-form's path
                path, query = url.path or b"/", url.query or b""
            except httptools.HttpParserInvalidURLError:  # asterisk-form (OPTIONS *), authority-form
                path, _, query = target.partition(b"?")
        env["REQUEST_METHOD"] = request.method
        env["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
        env["QUERY_STRING"] = query.decode("latin-1")
        env["RAW_URI"] = request.target.decode("latin-1")
        env["SERVER_PROTOCOL"] = "HTTP/" + request.version
        peer = conn.peer if conn is not None else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            env["REMOTE_ADDR"] = str(peer[0])
            env["REMOTE_PORT"] = str(peer[1])
        keys = _ENVIRON_KEYS
        for name, value in request.headers:
            key = keys.get(name)
            if key is None:
                key = _environ_key(name)
            if not key:  # a name with "_": dropped
                continue
            text = value.decode("latin-1")
            if key is _CONTENT_TYPE or key is _CONTENT_LENGTH:
                env[key] = text
                continue
            if key is _HTTP_HOST:
                host, _, port = text.rpartition(":") if text.rfind(":") > text.rfind("]") else (text, "", "")
                env["SERVER_NAME"] = host
                if port:
                    env["SERVER_PORT"] = port
            env[key] = env[key] + "," + text if key in env else text
        if request.chunked:
            env["CONTENT_LENGTH"] = str(len(request.body))
        env["wsgi.input"] = io.BytesIO(request.body)
        return env

    def handle(self, request, conn) -> Response:
        state = StartResponse()
        result = self.app(self.environ(request, conn), state)
        try:
            if type(result) in (list, tuple):
                body = result  # known whole: the protocol gives it a Content-Length
                if state.written:
                    body = [*state.written, *result]
                close = None
            else:
                iterator = iter(result)
                first = b""
                for first in iterator:
                    if first:
                        break
                if first:
                    if state.written:
                        first = b"".join([*state.written, first])
                        state.written.clear()
                    body = _pieces(first, iterator, state)
                    close = getattr(result, "close", None)
                else:  # exhausted without a byte: the body is what write() got, if anything
                    body = list(state.written)
                    close = getattr(result, "close", None)
            if state.status is None:
                raise RuntimeError("the WSGI app returned without calling start_response()")
            state.sent = True
            return Response(state.status, state.reason, state.headers, body, close)
        except BaseException:
            _close_quietly(result)
            raise
