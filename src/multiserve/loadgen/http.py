"""HTTP/1.1 load: the request a run sends (:class:`HttpRequest`) and the connection that sends it
and checks every response (:class:`HttpLoadConnection`).

Responses are parsed by httptools' ``HttpResponseParser`` (llhttp, already the server's parser),
never by hand: a response is one ``on_message_complete``, so keep-alive, pipelined responses,
chunked bodies and a response split over reads all count right. Measured against a
Content-Length fast path (docs/benchmarks.md, "bench http://... against wrk"): the parser costs
1.8 µs per small response, the fast path 0.6 µs; 1.2 µs is 6% of the client's ~20 µs per request,
and at 30k req/s the client used 59% of its core: not worth a second, hand-written path.

What is checked per response: the status (a non-2xx one is counted as the error kind
``http_NNN``, e.g. ``http_503``, beside ``lost``/``closed``/``reset``/...); with ``expect_body``
the body too (a difference is a mismatch, as a wrong line reply is). A response the parser
refuses is a mismatch and its connection is ended as ``bad_response``. A response that says it is
the last (``Connection: close``, HTTP/1.0 without keep-alive) ends its connection without an
error: the next request goes out on a new connection, as every HTTP client does (gunicorn's sync
worker answers so).
"""
from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlsplit

import httptools

from .connection import LoadConnection, now_us

# RFC 9110 section 5.6.2: a header name is a token.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# An --expect-body mismatch keeps at most this much of the body as its example.
EXAMPLE_BYTES = 80


@dataclasses.dataclass
class HttpRequest:
    """One request, sent as is on every connection. ``expect_body``: the body every response
    must have (None: only the status is checked)."""

    path: str = "/"
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    expect_body: bytes | None = None

    def wire(self, host: str, port: int) -> bytes:
        """The request's bytes: ``Host`` (unless given), the headers, ``Content-Length`` when there
        is a body or the method usually carries one (RFC 9110 section 8.6), then the body."""
        names = {name.lower() for name, _ in self.headers}
        lines = [f"{self.method} {self.path} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {host}:{port}")
        lines += [f"{name}: {value}" for name, value in self.headers]
        if "content-length" not in names and (self.body or self.method in ("POST", "PUT", "PATCH")):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body

    def validate(self) -> None:
        """ValueError (one line) for a request that could not be sent as given."""
        if not _TOKEN.match(self.method):
            raise ValueError(f"method {self.method!r} is not an HTTP token")
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n"):
            raise ValueError(f"path {self.path!r} must start with / and hold no space or newline")
        for name, value in self.headers:
            if not _TOKEN.match(name) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name!r}: expected 'Name: value' (a token, a value without newlines)")
        if any(name.lower() == "transfer-encoding" for name, _ in self.headers):
            raise ValueError("Transfer-Encoding is not supported: the body is sent with a Content-Length")


def parse_url(text: str) -> tuple[str, int, str]:
    """``http://HOST[:PORT][/PATH[?QUERY]]`` -> (host, port, path); ValueError (one line)
    otherwise. https is refused: the load generator speaks plain HTTP/1.1 only."""
    parts = urlsplit(text)
    if parts.scheme != "http":
        raise ValueError(f"expected http://HOST:PORT/PATH, got {text!r}"
                         + (" (https is not supported)" if parts.scheme == "https" else ""))
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not parts.hostname:
        raise ValueError(f"no host in {text!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, path


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` -> (name, value); ValueError (one line) otherwise."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.match(name):
        raise ValueError(f"--header {text!r}: expected 'Name: value'")
    return name, value


class BadResponse(ConnectionError):
    """A response the parser refused (counted as the error kind ``bad_response``)."""

    kind = "bad_response"


class _Responses:
    """The parser's callbacks for one connection: counts complete responses and checks each."""

    def __init__(self, worker):
        self.w = worker
        self.expect = worker.spec.http.expect_body
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.complete = 0  # responses completed by the current feed
        self.last = False  # the latest response said the connection ends after it

    def on_message_begin(self):
        self.body.clear()

    def on_message_complete(self):
        parser = self.parser
        status = parser.get_status_code()
        if not 200 <= status < 300:
            self.w.count_error(f"http_{status}")
        if self.expect is not None:
            body = b"".join(self.body)
            if body != self.expect:
                self.w.mismatch(body[:EXAMPLE_BYTES], self.expect)
        if not parser.should_keep_alive():
            self.last = True
        self.complete += 1

    def feed(self, data: bytes) -> int:
        """Complete responses in ``data`` (raises httptools.HttpParserError)."""
        self.complete = 0
        self.parser.feed_data(data)
        return self.complete


class _CheckedResponses(_Responses):
    """With ``expect_body``: the body is kept (httptools calls only the callbacks that exist,
    so an unchecked run never copies a body)."""

    def on_body(self, body: bytes):
        self.body.append(body)


def _responses(worker) -> _Responses:
    return (_Responses if worker.spec.http.expect_body is None else _CheckedResponses)(worker)


class HttpLoadConnection(LoadConnection):
    """:class:`LoadConnection` with replies parsed as HTTP responses (see the module docstring).

    The request ring has one request (``worker.reqs``): sending, pipelining, open loop,
    timeouts and reconnects are the line connection's, unchanged."""

    def __init__(self, worker, index: int, slot: int):
        super().__init__(worker, index, slot)
        self.responses = _responses(worker)
        self.data_received = self._data_http

    def _data_http(self, data: bytes) -> None:
        now = now_us()
        responses = self.responses
        try:
            k = responses.feed(data)
        except httptools.HttpParserError:
            self.w.mismatch(data[:EXAMPLE_BYTES], None)
            k, broken = responses.complete, True
        else:
            broken = False
        if k > self.inflight:  # responses nobody asked for: wrong, not answers
            self.w.mismatch(data[:EXAMPLE_BYTES], None)
            k = self.inflight
        if responses.last or broken:  # record, but send nothing more on this connection
            self._completed(k, now, refill=False)
            self._end(broken)
        else:
            self._completed(k, now)

    def _end(self, broken: bool) -> None:
        """The server ends the connection after this response (or sent what cannot be parsed):
        count what was still in flight as ``lost`` (and a broken one as ``bad_response``), close,
        and reconnect (the worker's successor, with the open-loop backlog)."""
        w = self.w
        if broken:
            w.connection_failed(self, "bad_response")
            self.transport.abort()
            return
        if not self.alive:
            return
        self.alive = False
        if self.inflight:
            w.count_error("lost", self.inflight)
        self.transport.close()
        w._replace(self)


def prime_reader(worker):
    """Priming: a callable fed each chunk of the first response, returning None until it is
    complete, then whether the connection stays open after it. Raises :class:`BadResponse`
    for a malformed response. The status and body are checked as any response's."""
    responses = _responses(worker)

    def feed(data: bytes) -> bool | None:
        try:
            complete = responses.feed(data)
        except httptools.HttpParserError as exc:
            raise BadResponse(f"malformed first response: {exc}") from None
        return None if not complete else not responses.last

    return feed
