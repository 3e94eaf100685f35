"""The sans-IO HTTP protocol (multiserve.protocol.http): every split of a stream parses the same,
limits hold under any split, and no input makes it raise (only its own 4xx replies escape)."""
from __future__ import annotations

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiserve.protocol.base import CLOSE, SETTLED, Interim
from multiserve.protocol.http import CONTINUE, HTTPProtocol, Request, Response

STREAM = (
    b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Many: 1\r\nX-Many: 2\r\n\r\n"
    b"POST /cl HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
    b"POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: t\r\n\r\n"
    b"PUT /expect HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc"
    b"HEAD /head HTTP/1.1\r\nHost: h\r\n\r\n"
    b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    b"GET /never HTTP/1.1\r\nHost: h\r\n\r\n"  # after Connection: close: not parsed
)


def summary(items):
    out = []
    for item in items:
        if isinstance(item, Interim):
            out.append(("interim", item.wire))
        else:
            out.append((item.method, item.target, item.version, tuple(item.headers), item.body,
                        item.chunked, item.keep_alive))
    return out


def feed(chunks, **limits):
    """Every chunk in turn; after each, the hot path's ``settled`` agrees with ``status()``."""
    protocol = HTTPProtocol(**limits)
    items = []
    for chunk in chunks:
        items += protocol.receive_data(chunk)
        assert protocol.settled == (protocol.status() == SETTLED)
    return protocol, items


def split(data: bytes, cuts) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if data[a:b]]


EXPECTED = [
    ("GET", b"/a?x=1", "1.1", ((b"host", b"h"), (b"x-many", b"1"), (b"x-many", b"2")), b"", False, True),
    ("POST", b"/cl", "1.1", ((b"host", b"h"), (b"content-length", b"11")), b"hello world", False, True),
    ("POST", b"/chunked", "1.1", ((b"host", b"h"), (b"transfer-encoding", b"chunked")), b"hello world", True, True),
    ("interim", b"HTTP/1.1 100 Continue\r\n\r\n"),
    ("PUT", b"/expect", "1.1", ((b"host", b"h"), (b"content-length", b"3"), (b"expect", b"100-continue")), b"abc", False, True),
    ("HEAD", b"/head", "1.1", ((b"host", b"h"),), b"", False, True),
    ("GET", b"/last", "1.1", ((b"host", b"h"), (b"connection", b"close")), b"", False, False),
]


def test_whole_stream():
    protocol, items = feed([STREAM])
    assert summary(items) == EXPECTED
    assert protocol.error is None and not protocol.keep_alive and not protocol.pending


def test_byte_by_byte():
    protocol, items = feed([STREAM[i:i + 1] for i in range(len(STREAM))])
    assert summary(items) == EXPECTED


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_random_chunks(cuts):
    protocol, items = feed(split(STREAM, cuts))
    assert summary(items) == EXPECTED
    assert protocol.error is None


def test_pending_while_a_request_is_incomplete():
    protocol = HTTPProtocol()
    assert protocol.receive_data(b"GET / HTTP/1.1\r\nHo") == [] and protocol.pending
    [request] = protocol.receive_data(b"st: h\r\n\r\n")
    assert request.target == b"/" and not protocol.pending


@settings(deadline=None, max_examples=100)
@given(st.lists(st.integers(min_value=0, max_value=6000), max_size=30))
def test_header_limit_holds_under_any_split(cuts):
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"x" * 5000 + b"\r\n\r\n"
    protocol, items = feed(split(data, cuts), max_header=4096)
    assert items == []
    assert protocol.error is not None and protocol.error.reply.startswith(b"HTTP/1.1 431 ")


def test_a_head_just_under_the_limit_passes_byte_by_byte():
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"x" * 3000 + b"\r\n\r\n"
    protocol, items = feed([data[i:i + 1] for i in range(len(data))], max_header=4096)
    assert protocol.error is None and len(items) == 1


@pytest.mark.parametrize("raw, status", [
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n", 413),  # refused before the body
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" + b"x" * 1001, 413),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: tea\r\n\r\n", 417),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS ClientHello
])
def test_refusals(raw, status):
    protocol, items = feed([raw], max_body=1000)
    assert items == []
    error = protocol.error
    assert error is not None and error.reply.startswith(b"HTTP/1.1 %d " % status), error
    assert b"connection: close" in error.reply and error.reason.startswith(f"HTTP {status}:")
    assert protocol.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") == []  # nothing after a refusal


def test_requests_before_a_malformed_one_are_returned():
    protocol, items = feed([b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nBROKEN\r\n\r\n"])
    assert [r.target for r in items] == [b"/ok"]
    assert protocol.error.reply.startswith(b"HTTP/1.1 400 ")


def test_upgrade_is_answered_as_http_then_closed():
    protocol, items = feed([b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nxx"])
    assert [r.target for r in items] == [b"/"] and not protocol.keep_alive and protocol.error is None


def test_http10_keep_alive_rules():
    _, items = feed([b"GET / HTTP/1.0\r\n\r\n"])
    assert items[0].keep_alive is False
    _, items = feed([b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n"])
    assert [r.keep_alive for r in items] == [True, False]


@settings(deadline=None, max_examples=500)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=10))
def test_fuzz_only_our_own_errors_escape(data, cuts):
    """Any bytes, any split: requests and at most one ProtocolError (a 4xx/5xx reply), no exception."""
    protocol, items = feed(split(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" + data, cuts))
    assert all(isinstance(item, (Request, Interim)) for item in items)
    if protocol.error is not None:
        assert protocol.error.reply.startswith(b"HTTP/1.1 ")
        assert int(protocol.error.reply[9:12]) in (400, 413, 417, 431, 501, 505)


# -- responses ------------------------------------------------------------------------------------

DATE = b"Tue, 01 Dec 2026 00:00:00 GMT"


def answered(raw: bytes, response: Response):
    protocol = HTTPProtocol(date=lambda: DATE)
    protocol.receive_data(raw)
    wire = protocol.send(response)
    wire = b"".join(wire) if not isinstance(wire, bytes) else wire
    assert protocol.settled == (protocol.status() == SETTLED)  # also once a response closes
    return protocol, wire


def parse_response(wire: bytes, head=False):
    """httptools' own reading of our output: status, headers, body (framing checked)."""
    got = {}

    class CB:
        def on_header(self, name, value):
            got.setdefault("headers", []).append((name.lower(), value))

        def on_body(self, body):
            got["body"] = got.get("body", b"") + body

        def on_message_complete(self):
            got["complete"] = True

    parser = httptools.HttpResponseParser(CB())
    parser.feed_data(wire)
    assert got.get("complete"), wire
    return parser.get_status_code(), dict(got.get("headers", [])), got.get("body", b"")


GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_known_body_gets_a_length_and_the_server_headers():
    protocol, wire = answered(GET, Response(200, "OK", [(b"Content-Type", b"text/plain")], [b"hel", b"lo"]))
    assert wire.startswith(b"HTTP/1.1 200 OK\r\n")
    status, headers, body = parse_response(wire)
    assert (status, body) == (200, b"hello")
    assert headers[b"content-length"] == b"5" and headers[b"date"] == DATE and headers[b"server"] == b"multiserve"
    assert protocol.keep_alive


def test_streamed_body_is_chunked_and_pulled_lazily():
    pulled = []
    closed = []

    def body():
        for piece in (b"a" * 10, b"", b"b" * 70000):
            pulled.append(len(piece))
            yield piece

    protocol = HTTPProtocol(date=lambda: DATE)
    protocol.receive_data(GET)
    wire = protocol.send(Response(200, "OK", [], body(), close=lambda: closed.append(1)))
    assert pulled == [] and not isinstance(wire, bytes)  # nothing pulled until the engine writes
    status, headers, data = parse_response(b"".join(wire))
    assert headers[b"transfer-encoding"] == b"chunked" and data == b"a" * 10 + b"b" * 70000
    assert closed == [1] and protocol.keep_alive


def test_head_and_no_body_statuses():
    protocol = HTTPProtocol(date=lambda: DATE)
    protocol.receive_data(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    wire = protocol.send(Response(200, "OK", [], [b"hello"]))
    assert wire.endswith(b"content-length: 5\r\n\r\n")  # the headers of a GET, no body
    _, wire = answered(GET, Response(204, "No Content", [], []))
    assert b"content-length" not in wire and wire.endswith(b"\r\n\r\n")


def test_a_body_that_fails_midway_closes_the_connection():
    def body():
        yield b"first"
        raise RuntimeError("boom")

    protocol = HTTPProtocol(date=lambda: DATE)
    protocol.receive_data(GET + GET)
    wire = protocol.send(Response(200, "OK", [], body()))
    pieces = []
    with pytest.raises(RuntimeError):
        for piece in wire:
            pieces.append(piece)
    assert b"".join(pieces).endswith(b"5\r\nfirst\r\n")  # no terminating chunk: the client sees the cut
    assert not protocol.keep_alive
    assert protocol.send(Response(200, "OK", [], [b"x"])) == b""  # nothing after the cut


def test_short_content_length_closes_and_long_is_cut():
    protocol, wire = answered(GET, Response(200, "OK", [(b"Content-Length", b"10")], [b"short"]))
    assert wire.endswith(b"\r\n\r\nshort") and not protocol.keep_alive
    protocol, wire = answered(GET, Response(200, "OK", [(b"Content-Length", b"3")], [b"toolong"]))
    assert wire.endswith(b"\r\n\r\ntoo") and protocol.keep_alive


def test_http10_unknown_length_is_close_delimited():
    protocol, wire = answered(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Response(200, "OK", [], iter([b"x"])))
    assert b"transfer-encoding" not in wire and b"connection: close" in wire and wire.endswith(b"\r\n\r\nx")
    assert not protocol.keep_alive


def test_error_replies():
    protocol = HTTPProtocol(date=lambda: DATE)
    assert protocol.error_reply("idle timeout") is None
    timeout = protocol.error_reply("request timeout")
    assert timeout.startswith(b"HTTP/1.1 408 ") and b"connection: close" in timeout
    protocol = HTTPProtocol(date=lambda: DATE)
    protocol.receive_data(GET + GET)
    assert protocol.error_reply("service error").startswith(b"HTTP/1.1 500 ")
    assert protocol.keep_alive
    protocol.send(Response(200, "OK", [], [b"x"]))
    assert protocol.error_reply("request timeout") is None  # something was answered: a silent close


def test_send_refuses_what_is_not_a_response_before_committing():
    protocol = HTTPProtocol(date=lambda: DATE)
    protocol.receive_data(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(TypeError):
        protocol.send(b"raw bytes")
    with pytest.raises(TypeError):
        protocol.send(Response(200, "OK", [], ["str piece"]))
    reply = protocol.error_reply("service error")  # the 500 still answers the HEAD: no body
    assert reply.startswith(b"HTTP/1.1 500 ") and reply.endswith(b"\r\n\r\n")


def test_continue_is_an_interim():
    assert CONTINUE.wire == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_settled_follows_a_response_that_ends_the_connection():
    """The engines read ``settled`` after answering inline: a response that closes (the app's
    ``Connection: close``) must turn it off, as ``status()`` says CLOSE."""
    protocol = HTTPProtocol(date=lambda: DATE)
    protocol.receive_data(GET)
    assert protocol.settled
    protocol.send(Response(200, "OK", [(b"connection", b"close")], b"x"))
    assert not protocol.settled and protocol.status() == CLOSE
    protocol = HTTPProtocol(date=lambda: DATE)
    protocol.receive_data(GET)
    assert protocol.error_reply("service error") and protocol.settled  # a 500 keeps a 1.1 connection
    assert protocol.receive_eof() == [] and protocol.settled == (protocol.status() == SETTLED)
