"""HTTP/1.1 (RFC 9112) over httptools, the binding of llhttp (Node.js's parser, what uvicorn uses).

Why httptools and not h11: it is the faster by a factor of 15-40 on this machine (a typical GET
parses in 3-5 us; h11 takes 54-64 us to parse it and about 125 us with its reply: more than
uvicorn's whole 45 us per request, see docs/benchmarks.md#http-parser), and llhttp is the stricter
one: it refuses every request-smuggling shape of RFC 9112 sections 6.1, 6.3 and 11.2 (CL with TE,
duplicate or invalid Content-Length, chunk-size overflow, whitespace before a colon, control
characters) where h11 resolves CL+TE by preferring TE. llhttp parses; this module only adds the
rules llhttp leaves to a server (below) and writes responses.

Rules (the whole state machine of a connection, in one place):

- Requests are returned in the order they arrived, each once complete, body included; pipelined
  requests in one read are all returned; responses must be sent in the same order (the session
  does), and each ``send`` answers the oldest unanswered request.
- A request's body is held whole in memory (``Request.body``), so it is bounded: a declared
  Content-Length over ``max_body`` is refused with 413 before any of the body is read; a chunked
  body that grows past it, too. Request line + headers over ``max_header`` bytes: 431.
- A malformed request: 400 (and 505 for a version other than 1.0/1.1, 501 for a transfer coding
  other than ``chunked``, 417 for an expectation other than ``100-continue``). An HTTP/1.1 request
  without exactly one Host header is malformed (RFC 9112 3.2). Any refusal is a
  :class:`~.base.ProtocolError`: the requests before it are answered, then its reply, then close.
- ``Expect: 100-continue`` on a request with a body: an :class:`~.base.Interim` ``100 Continue``
  goes out (in order, after the responses owed) as soon as the headers are in.
- Keep-alive: HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only with ``Connection:
  keep-alive``. After a request that ends the connection, nothing more is parsed and
  ``keep_alive`` is False. A response can end it too: the app's ``Connection: close``, an HTTP/1.0
  body of unknown length (delimited by the close), or a streamed body that failed or came out
  shorter than its Content-Length; every response after that one is empty.
- Response framing: the app's Content-Length (the body is cut there); else a body known whole (a
  list or tuple of bytes) gets one; else chunked on HTTP/1.1. HEAD, 1xx, 204 and 304 responses
  carry no body (HEAD keeps the headers a GET would get). ``Date`` and ``Server`` are added
  unless the app set them. Hop-by-hop headers from the app (Connection, Transfer-Encoding,
  Keep-Alive) are replaced by the server's own: framing is the server's.
- Server-side reasons (``error_reply``): "service error" -> 500 answering the oldest request;
  "request timeout" -> 408 and close if nothing was answered on the connection yet, else a silent
  close; "idle timeout" -> a silent close.

Sans-IO: no socket, thread, clock or logger. The clock for ``Date`` is passed in (``date``), by
the factory.
"""
from __future__ import annotations

import collections

import httptools

from .base import Interim, Protocol, ProtocolError

# 64 KiB: issue 12's --max-header default, the same as --max-line; above h11's 16 KiB and nginx's
# large_client_header_buffers (4 x 8 KiB), so real clients' cookies fit.
DEFAULT_MAX_HEADER = 65536
# 1 MiB: nginx's client_max_body_size default; bodies are held whole in memory (see above).
DEFAULT_MAX_BODY = 1 << 20
SERVER = b"multiserve"
# A body known whole up to this size goes out as one bytes object (one write); larger ones, and
# chunks at least this big, as separate pieces rather than copied together.
JOIN_LIMIT = 65536

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
    417: "Expectation Failed", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 505: "HTTP Version Not Supported",
}
SERVICE_ERROR = "internal server error"  # the 500's text
CONTINUE = Interim(b"HTTP/1.1 100 Continue\r\n\r\n")
NO_BODY_STATUS = frozenset({204, 304})
# response headers the server owns (framing and connection management, RFC 9110 7.6.1)
HOP_BY_HOP = frozenset({b"connection", b"transfer-encoding", b"keep-alive"})
# what send() does with an app's header, by its lower-cased name (one dict look-up per header):
# Content-Length is read and written once, hop-by-hop ones replaced, Server and Date kept
_LENGTH, _HOP, _SERVER, _DATE = "length", "hop", "server", "date"
_SERVER_OWNED = {b"content-length": _LENGTH, b"server": _SERVER, b"date": _DATE, **dict.fromkeys(HOP_BY_HOP, _HOP)}
# the request headers that decide framing and the connection (on_headers_complete)
_HOST, _TE, _CONNECTION, _EXPECT = "host", "te", "connection", "expect"
_REQUEST_FIELDS = {b"host": _HOST, b"content-length": _LENGTH, b"transfer-encoding": _TE,
                   b"connection": _CONNECTION, b"expect": _EXPECT}
# Content-Length lines already formatted, for bodies under 4 KiB (bounded: at most 4096 entries)
_LENGTH_LINES: dict = {}
_LENGTH_LINES_MAX = 4096
# status lines already formatted, by (status, reason); bounded, since an app may invent reasons
_STATUS_LINES: dict = {}
_STATUS_LINES_MAX = 1024


def _status_line(status: int, reason: str) -> bytes:
    line = b"HTTP/1.1 %d %s" % (status, reason.encode("latin-1"))
    if len(_STATUS_LINES) < _STATUS_LINES_MAX:
        _STATUS_LINES[(status, reason)] = line
    return line


class Request:
    """One complete HTTP request, as the service (the WSGI adapter) receives it.

    ``method`` str, ``target`` bytes as sent (``/path?query``), ``version`` "1.1" or "1.0",
    ``headers`` a list of (lower-cased name, value) bytes pairs in order, ``body`` bytes (a chunked
    body already decoded: ``chunked`` True), ``keep_alive`` whether the client wants the
    connection kept after this request.
    """

    __slots__ = ("method", "target", "version", "headers", "body", "chunked", "keep_alive")

    def __init__(self, method, target, version, headers, body=b"", chunked=False, keep_alive=True):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.chunked = chunked
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        return f"Request({self.method} {self.target!r} HTTP/{self.version}, {len(self.body)} body bytes)"


class Response:
    """What a service returns for one request.

    ``status`` an int, ``reason`` its text (str), ``headers`` (name, value) pairs of ``bytes`` (the
    adapter checked them: no CR, LF or NUL), ``body`` ``bytes``, a list or tuple of ``bytes``
    (known whole), or any iterable of ``bytes`` (streamed: pulled as the engine writes, never
    joined); ``close`` a callable run once the body is written or abandoned (WSGI's
    ``iterable.close()``), or None.
    """

    __slots__ = ("status", "reason", "headers", "body", "close")

    def __init__(self, status: int, reason: str, headers, body=b"", close=None):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.close = close


class Refused(Exception):
    """Raised inside a parser callback: the request is refused with ``status``."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def simple_response(status: int, text: str, date: bytes, *, close: bool, head: bool = False) -> bytes:
    """A complete plain-text response for the server's own errors."""
    body = text.encode("ascii", "replace") + b"\n"
    lines = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, "Error").encode()),
             b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(body),
             b"date: " + date, b"server: " + SERVER]
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head else body)


class Framer:
    """The wire pieces of one response body: the head goes out with the first piece, each piece
    is chunk-framed (chunked) or cut at the Content-Length (``length``). ``frame(piece)`` returns
    the pieces to write, or None once the Content-Length is reached (stop pulling); ``end()`` the
    last ones; ``complete`` whether the body came out whole."""

    __slots__ = ("pending", "left", "chunked", "complete")

    def __init__(self, head: bytes, length, chunked: bool):
        self.pending = head
        self.left = length
        self.chunked = chunked
        self.complete = False

    def frame(self, piece) -> list | None:
        if type(piece) is not bytes:
            if not isinstance(piece, (bytearray, memoryview)):
                raise TypeError(f"a response body piece must be bytes, not {type(piece).__name__}")
            piece = bytes(piece)
        left = self.left
        if left is not None:
            if left <= 0:
                return None  # past the Content-Length: the rest is not sent (PEP 3333 allows)
            if len(piece) > left:
                piece = piece[:left]
            self.left = left - len(piece)
        if not piece:
            return []
        pending, self.pending = self.pending, b""
        if self.chunked:
            size = b"%x\r\n" % len(piece)
            if len(piece) >= JOIN_LIMIT:  # large: not copied into one object
                self.pending = b"\r\n"
                return [pending + size, piece]
            piece = size + piece + b"\r\n"
        if not pending:
            return [piece]
        return [pending + piece] if len(piece) < JOIN_LIMIT else [pending, piece]

    def end(self) -> list:
        self.complete = self.left is None or self.left == 0
        tail = self.pending + (b"0\r\n\r\n" if self.chunked else b"")
        self.pending = b""
        return [tail] if tail else []


def _tokens(values) -> set[bytes]:
    """The comma-separated tokens of a header's values, lower-cased and stripped."""
    return {token.strip().lower() for value in values for token in value.split(b",")}


class HTTPProtocol(Protocol):
    """:class:`~.base.Protocol` for HTTP/1.x. One per connection; see the module docstring."""

    name = "http"
    access_log = "request"
    __slots__ = ("max_header", "max_body", "date", "_parser", "_out", "_error", "_stopped",
                 "_closing", "_owed", "_answered", "_in_head", "_head_bytes", "_url", "_headers",
                 "_body", "_body_size", "_partial", "_keep", "_cut", "_seen_bytes", "settled",
                 "_stamp", "_stamp_date", "_version")

    def __init__(self, max_header: int = DEFAULT_MAX_HEADER, max_body: int = DEFAULT_MAX_BODY, date=None):
        self.max_header = max_header
        self.max_body = max_body
        self.date = date or (lambda: b"Thu, 01 Jan 1970 00:00:00 GMT")
        self._parser = httptools.HttpRequestParser(self)
        self._out = []
        self._error = None
        self._stopped = False   # no more requests are parsed (an error, or a request that closes)
        self._closing = False   # keep_alive is False: close after the responses owed
        self._cut = False       # a response ended the connection: later responses are empty
        self._keep = True
        self._owed = collections.deque()  # (head?, keep_alive?, http/1.0?) per request not yet answered
        self._answered = 0
        self._partial = False   # a request has begun and is not complete
        self._in_head = False   # ... and its headers are not complete
        self._head_bytes = self._seen_bytes = 0
        self._url = b""
        self._headers = []
        self._body = None
        self._body_size = 0
        # == (status() == SETTLED), kept by receive_data and receive_eof, and cleared wherever
        # the connection starts closing (the engines' hot path reads it instead of status())
        self.settled = True
        self._stamp_date = self._stamp = None  # the Date and Server lines, remade when the date changes
        self._version = "1.1"

    # -- the Protocol interface -------------------------------------------------------------
    def receive_data(self, data: bytes) -> list:
        if self._stopped:
            return []
        out = self._out = []
        head_continues = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade/CONNECT: we speak no other protocol, so the request is answered as plain
            # HTTP (RFC 9110 7.8 lets a server ignore Upgrade), and llhttp parses nothing after
            # it: the connection closes after the response.
            self._stop_after_last()
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if not isinstance(refused, Refused):
                raise
            if not self._stopped:
                self._refuse(refused.status, refused.reason)
        except httptools.HttpParserError as exc:
            if not self._stopped:
                self._refuse(400, f"malformed request: {exc}")
        if self._in_head and not self._stopped:
            # llhttp keeps a header that spans reads in memory: bound it by the bytes read while
            # the head is incomplete (a read in which the head began counts what its callbacks
            # saw; the rest of that read is at most one read, so memory stays within
            # max_header + one read).
            self._head_bytes = self._head_bytes + len(data) if head_continues else self._seen_bytes
            if self._head_bytes > self.max_header:
                self._refuse(431, f"request line and headers over {self.max_header} bytes")
        self.settled = self._error is None and not self._closing and not (self._partial and not self._stopped)
        return out

    def receive_eof(self) -> list:
        self._stopped = True
        self.settled = self._error is None and not self._closing
        return []

    @property
    def error(self) -> ProtocolError | None:
        return self._error

    @property
    def pending(self) -> int:
        return 1 if self._partial and not self._stopped else 0

    @property
    def keep_alive(self) -> bool:
        return not self._closing

    def send(self, response):
        """The wire form of ``response``, answering the oldest unanswered request: ``bytes``, or
        a list / generator of pieces for a large or streamed body. TypeError (before anything
        is committed, so the session's 500 answers the same request) for a reply that is not
        a :class:`Response`, a bad Content-Length, or a known body that is not bytes."""
        if type(response) is not Response:
            raise TypeError(f"an HTTP reply must be a multiserve.protocol.http.Response, not {type(response).__name__}")
        status = response.status
        status_line = _STATUS_LINES.get((status, response.reason))
        if status_line is None:
            status_line = _status_line(status, response.reason)
        lines = [status_line]
        length = None
        server = date = app_closes = False
        owned = _SERVER_OWNED.get
        for name, value in response.headers:
            kind = owned(name.lower())
            if kind is None:
                lines.append(name + b": " + value)
            elif kind is _LENGTH:
                try:
                    length = int(value)
                except ValueError:
                    raise TypeError(f"bad content-length {value!r}") from None
                # written below, once
            elif kind is _HOP:
                if name.lower() == b"connection" and b"close" in _tokens([value]):
                    app_closes = True
            else:
                if kind is _SERVER:
                    server = True
                else:
                    date = True
                lines.append(name + b": " + value)
        body = response.body
        body_type = type(body)
        known = body_type is bytes or body_type is list or body_type is tuple
        if known and body_type is not bytes and not all(type(piece) is bytes for piece in body):
            raise TypeError("a response body must be bytes pieces")
        # committed from here on
        head_only, keep, http10 = self._owed.popleft() if self._owed else (False, False, False)
        self._answered += 1
        if self._cut:
            # an earlier response ended the connection (its body may be delimited by the
            # close): nothing more may be written
            if response.close is not None:
                response.close()
            return b""
        if not (date or server):
            now = self.date()
            if now is not self._stamp_date:  # a new second (the clock formats once per second)
                self._stamp_date = now
                self._stamp = b"date: " + now + b"\r\nserver: " + SERVER
            lines.append(self._stamp)
        elif not date:
            lines.append(b"date: " + self.date())
        elif not server:
            lines.append(b"server: " + SERVER)
        has_body = status >= 200 and status not in NO_BODY_STATUS
        size = None
        if known and has_body:
            size = len(body) if body_type is bytes else sum(map(len, body))
            if length is None:
                length = size
        chunked = False
        if length is not None:
            line = _LENGTH_LINES.get(length)
            if line is None:
                line = b"content-length: %d" % length
                if length < _LENGTH_LINES_MAX:
                    _LENGTH_LINES[length] = line
            lines.append(line)
        elif not head_only and has_body:
            if http10:
                keep = False  # the body ends where the connection does
            else:
                chunked = True
                lines.append(b"transfer-encoding: chunked")
        elif head_only and has_body:
            lines.append(b"transfer-encoding: chunked")  # what a GET would get (RFC 9110 9.3.2)
        if app_closes:
            keep = False
        if not keep:
            self._closing = self._stopped = self._cut = True
            self.settled = False
            lines.append(b"connection: close")
        elif http10:
            lines.append(b"connection: keep-alive")
        lines.append(b"")
        if head_only or not has_body:
            lines.append(b"")
            if response.close is not None:
                response.close()
            return b"\r\n".join(lines)
        if known and size == length and response.close is None:  # known whole, exactly as long as it says
            if body_type is bytes:
                if length < JOIN_LIMIT:
                    lines.append(body)  # head and body in one join: one copy
                    return b"\r\n".join(lines)
                lines.append(b"")
                return [b"\r\n".join(lines), body]
            lines.append(b"")
            head = b"\r\n".join(lines)
            return b"".join([head, *body]) if length < JOIN_LIMIT else [head, *body]
        lines.append(b"")
        head = b"\r\n".join(lines)
        if type(body) is bytes:
            body = [body]
        if hasattr(body, "__aiter__"):
            return self._astream(head, body, length, chunked, response.close)
        return self._stream(head, body, length, chunked, response.close)

    def error_reply(self, reason: str) -> bytes | None:
        if reason == "service error":
            head_only, keep, _ = self._owed.popleft() if self._owed else (False, False, False)
            self._answered += 1
            if self._cut:
                return b""  # an earlier response ended the connection: nothing more may be written
            if not keep:
                self._closing = self._stopped = self._cut = True
                self.settled = False
            return simple_response(500, SERVICE_ERROR, self.date(), close=not keep, head=head_only)
        if reason == "request timeout" and self._answered == 0 and not self._owed:
            self._closing = self._stopped = True
            self.settled = False
            return simple_response(408, "request timeout", self.date(), close=True)
        return None

    def access_entry(self, request, response) -> tuple:
        """See :meth:`.base.Protocol.access_entry` (``--access-log`` only, off the hot path)."""
        if request is None:  # the refusal: its status and body are in the reply we wrote
            reply = self._error.reply if self._error is not None else b""
            return None, None, None, int(reply[9:12] or 0), len(reply) - reply.find(b"\r\n\r\n") - 4
        if type(response) is not Response:  # the service error's 500
            return request.method, request.target, request.version, 500, \
                0 if request.method == "HEAD" else len(SERVICE_ERROR) + 1
        body, length = response.body, None
        for name, value in response.headers:
            if name.lower() == b"content-length":
                length = int(value)  # send() checked it
        if request.method == "HEAD" or response.status in NO_BODY_STATUS or response.status < 200:
            length = 0
        elif type(body) in (bytes, list, tuple):
            size = len(body) if type(body) is bytes else sum(map(len, body))
            length = size if length is None else min(size, length)
        return request.method, request.target, request.version, response.status, length

    # -- responses ------------------------------------------------------------------------------
    def _stream(self, head, body, length, chunked, close):
        """The pieces of a streamed response, pulled as the engine writes them. If the body
        raises, ends short of its Content-Length or is abandoned, the connection closes after it
        (a client can tell a truncated response only by the close); ``close`` always runs."""
        framer = Framer(head, length, chunked)
        try:
            for piece in body:
                out = framer.frame(piece)
                if out is None:
                    break
                yield from out
            yield from framer.end()
        finally:
            if not framer.complete:
                self._closing = self._stopped = self._cut = True
                self.settled = False
            if close is not None:
                close()

    async def _astream(self, head, body, length, chunked, close):
        """``_stream`` for a body that is an async iterable (an ASGI app's)."""
        framer = Framer(head, length, chunked)
        try:
            async for piece in body:
                out = framer.frame(piece)
                if out is None:
                    break
                for wire in out:
                    yield wire
            for wire in framer.end():
                yield wire
        finally:
            if not framer.complete:
                self._closing = self._stopped = self._cut = True
                self.settled = False
            aclose = getattr(body, "aclose", None)
            if aclose is not None:  # leaving ``async for`` early does not close the body
                await aclose()
            if close is not None:
                close()

    # -- errors ---------------------------------------------------------------------------------
    def _refuse(self, status: int, reason: str) -> None:
        self._stopped = self._closing = True
        self.settled = False
        self._partial = False
        self._error = ProtocolError(simple_response(status, reason, self.date(), close=True), f"HTTP {status}: {reason}")

    def _stop_after_last(self) -> None:
        self._stopped = self._closing = True
        self.settled = False
        self._partial = False

    # -- httptools callbacks (called inside feed_data) ------------------------------------------
    def on_message_begin(self):
        self._partial = self._in_head = True
        self._head_bytes = self._seen_bytes = 0
        self._url = b""
        self._headers = []
        self._body = None
        self._body_size = 0

    def on_url(self, url: bytes):
        self._url += url
        self._seen_bytes += len(url)
        if self._seen_bytes > self.max_header:
            raise Refused(431, f"request line and headers over {self.max_header} bytes")

    def on_header(self, name: bytes, value: bytes):
        self._seen_bytes += len(name) + len(value) + 4  # trailers count too: they are held as well
        if self._seen_bytes > self.max_header:
            raise Refused(431, f"request line and headers over {self.max_header} bytes")
        if self._in_head:  # a chunked body's trailer fields are dropped (RFC 9110 6.5.1 lets us)
            self._headers.append((name.lower(), value))

    def on_headers_complete(self):
        self._in_head = False
        version = self._version = self._parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise Refused(505, f"HTTP/{version} is not supported")
        hosts = length = 0
        te = expect = None
        connection = []
        framing = _REQUEST_FIELDS.get
        for name, value in self._headers:
            field = framing(name)
            if field is None:
                continue
            if field is _HOST:
                hosts += 1
            elif field is _LENGTH:
                length = int(value)  # llhttp checked: digits only, one header
            elif field is _TE:
                te = value
            elif field is _CONNECTION:
                connection.append(value)
            else:
                expect = value
        if version == "1.1" and hosts != 1:
            raise Refused(400, "an HTTP/1.1 request needs exactly one Host header")
        if te is not None:
            if version == "1.0":
                raise Refused(400, "Transfer-Encoding in an HTTP/1.0 request")
            if te.strip().lower() != b"chunked":
                raise Refused(501, f"transfer coding {te.decode('latin-1')!r} is not supported (only chunked)")
        if length > self.max_body:
            raise Refused(413, f"declared body of {length} bytes over the {self.max_body}-byte limit")
        tokens = _tokens(connection) if connection else ()
        keep = b"close" not in tokens if version == "1.1" else b"keep-alive" in tokens
        self._keep = keep
        if expect is not None:
            if expect.strip().lower() != b"100-continue":
                raise Refused(417, f"unsupported expectation {expect.decode('latin-1')!r}")
            if version == "1.1" and (length or te is not None):
                self._out.append(CONTINUE)
        self._body = [] if (length or te is not None) else None

    def on_body(self, body: bytes):
        self._body_size += len(body)
        if self._body_size > self.max_body:
            raise Refused(413, f"body over the {self.max_body}-byte limit")
        self._body.append(body)

    def on_message_complete(self):
        if self._stopped:
            return
        self._partial = False
        method = self._parser.get_method().decode("ascii")
        version = self._version
        headers = self._headers
        body = self._body
        chunked = False
        keep = self._keep
        if body is not None:
            chunked = any(n == b"transfer-encoding" for n, _ in headers)
            body = body[0] if len(body) == 1 else b"".join(body)
        else:
            body = b""
        self._out.append(Request(method, self._url, version, headers, body, chunked, keep))
        self._owed.append((method == "HEAD", keep, version == "1.0"))
        if not keep:
            self._stop_after_last()


def factory(config):
    """The registry's entry: one ``HTTPProtocol`` per connection, with the configured limits and
    the real clock for ``Date``."""
    from ..httpdate import http_date

    max_header, max_body = config.max_header, config.max_body
    return lambda: HTTPProtocol(max_header, max_body, http_date)
