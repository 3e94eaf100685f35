"""The HTTP conformance suite: every engine serves the same WSGI app to the same raw-socket and
curl clients (issue 12). Import it into a test module to run it against every registered engine:

    from multiserve.testing.http_conformance import *  # noqa: F401,F403

Each test starts the real CLI as a subprocess on port 0 (``--protocol http --app ...``) and talks
to it over 127.0.0.1. The app is ``multiserve.testing.wsgi_apps:app``.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading

import pytest

from ..asgi import ASGI_ENGINES
from ..engines import ENGINES
from .clients import real_client
from .http_client import HTTPClient
from .server_process import running_server, wait_for

APPS = {"wsgi": "multiserve.testing.wsgi_apps:app", "asgi": "multiserve.testing.asgi_apps:app"}
ENGINE_NAMES = list(ENGINES)
# every engine runs WSGI apps; the event-loop engines run ASGI apps too
KINDS = [(e, "wsgi") for e in ENGINE_NAMES] + [(e, "asgi") for e in ASGI_ENGINES]


@pytest.fixture(params=KINDS, ids=lambda k: f"{k[0]}-{k[1]}")
def kind(request):
    """(engine, interface): each test runs for every engine under WSGI, and under ASGI where
    ASGI runs."""
    return request.param


@pytest.fixture(params=[k for k in KINDS if k[1] == "wsgi"], ids=lambda k: f"{k[0]}-{k[1]}")
def wsgi_kind(request):
    """For WSGI-only behaviour (the iterable's close(), write(), exc_info, a blocking body)."""
    return request.param


def http_server(kind, *extra, app=None):
    engine, interface = kind
    return running_server("--engine", engine, "--port", "0", "--protocol", "http",
                          "--app", app or APPS[interface], "--interface", interface, "--workers", "2", *extra)


def stop_cleanly(srv) -> str:
    code = srv.stop(30)
    err = srv.stderr_text()
    assert code == 0, err[-3000:]
    assert "stopped: connections=" in err, err[-3000:]
    return err


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


# -- the basics -------------------------------------------------------------------------------

def test_keep_alive_get_with_date_and_server(kind):
    with http_server(kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            for _ in range(3):  # one connection, three requests
                c.request("GET", "/")
                r = c.reply()
                assert (r.status, r.body) == (200, b"hello")
                assert r.header("content-length") == "5"
                assert r.header("server") == "multiserve"
                assert r.header("date", ).endswith(" GMT")
                assert r.header("connection") is None
            c.request("GET", "/nope")
            assert c.reply().status == 404
        err = stop_cleanly(srv)
    assert "Traceback" not in err, err[-3000:]
    assert "requests=4 errors=0" in err


def test_pipelined_requests_are_answered_in_order(kind):
    with http_server(kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.send(b"".join(get(f"/environ?keys=QUERY_STRING&n={i}") for i in range(20)))
            bodies = [c.reply().body for _ in range(20)]
    assert bodies == [f"QUERY_STRING=keys=QUERY_STRING&n={i}".encode() for i in range(20)]


def test_request_bodies_content_length_and_chunked(kind):
    with http_server(kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.request("POST", "/echo", body=b"x" * 1000)
            r = c.reply()
            assert (r.status, r.body, r.header("x-content-length")) == (200, b"x" * 1000, "1000")
            chunks = [b"hello ", b"chunked ", b"world"]
            c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            for chunk in chunks:  # one write per chunk, so the server reads them apart
                c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            c.send(b"0\r\n\r\n")
            r = c.reply()
            assert r.body == b"hello chunked world"
            assert (r.header("x-chunked"), r.header("x-content-length")) == ("True", "19")
            c.request("GET", "/")  # still in step after the chunked body
            assert c.reply().body == b"hello"


def test_head_has_the_headers_of_get_and_no_body(kind):
    with http_server(kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n" + get("/environ?keys=REQUEST_METHOD"))
            head = c.recv_raw(b"\r\n\r\n").decode()
            assert head.startswith("HTTP/1.1 200 OK\r\n")
            assert "content-length: 5\r\n" in head.lower()
            r = c.reply()  # the next bytes are the next response: no body came after the HEAD's headers
            assert (r.status, r.body) == (200, b"REQUEST_METHOD=GET")
            c.send(b"HEAD /stream HTTP/1.1\r\nHost: a\r\n\r\n" + get("/"))
            head = c.recv_raw(b"\r\n\r\n").decode().lower()
            assert "transfer-encoding: chunked\r\n" in head
            assert c.reply().body == b"hello"


def test_expect_100_continue(kind):
    with http_server(kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            assert c.recv_raw(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"  # before the body is sent
            c.send(b"hello")
            r = c.reply()
            assert (r.status, r.body) == (200, b"hello")
        err = stop_cleanly(srv)
    assert "requests=1 errors=0" in err  # the interim reply is not a request


def test_http10_closes_unless_keep_alive_is_asked(kind):
    with http_server(kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.send(b"GET /environ?keys=SERVER_PROTOCOL HTTP/1.0\r\n\r\n")
            r = c.reply()
            assert (r.status, r.body) == (200, b"SERVER_PROTOCOL=HTTP/1.0")
            assert c.closed()
        with HTTPClient(srv.host, srv.port) as c:
            for _ in range(2):
                c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                r = c.reply()
                assert (r.body, r.header("connection")) == (b"hello", "keep-alive")
            # a body of unknown length on HTTP/1.0: delimited by the close, even when kept alive
            c.send(b"GET /stream?n=3&size=4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.reply()
            assert (r.body, r.header("connection")) == (b"AAAABBBBCCCC", "close")
            assert c.closed()


def test_connection_close_from_client_and_from_app(kind):
    with http_server(kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + get("/"))  # the 2nd is never read
            r = c.reply()
            assert (r.body, r.header("connection")) == (b"hello", "close")
            assert c.closed()
        with HTTPClient(srv.host, srv.port) as c:
            c.request("GET", "/close")
            r = c.reply()
            assert (r.body, r.header("connection")) == (b"bye", "close")
            assert c.closed()
        err = stop_cleanly(srv)
    assert "requests=2 errors=0" in err


# -- responses --------------------------------------------------------------------------------

def test_streamed_and_large_responses(kind):
    with http_server(kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.request("GET", "/stream?n=50&size=1000")
            r = c.reply()
            assert r.header("transfer-encoding") == "chunked" and r.header("content-length") is None
            assert r.body == b"".join(bytes([65 + i % 26]) * 1000 for i in range(50))
            c.request("GET", "/stream?n=16&size=65536")  # 1 MiB, streamed, pieces of 64 KiB
            r = c.reply()
            assert r.body == b"".join(bytes([65 + i % 26]) * 65536 for i in range(16))
            c.request("GET", "/sized?n=16&size=65536")  # 1 MiB with the app's Content-Length
            r = c.reply()
            assert r.header("content-length") == str(1 << 20) and len(r.body) == 1 << 20
            c.request("GET", "/no-content")
            r = c.reply()
            assert (r.status, r.body, r.header("content-length")) == (204, b"", None)
        stop_cleanly(srv)


def test_wsgi_close_write_and_exc_info(wsgi_kind):
    with http_server(wsgi_kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            for path in ("/stream?n=3", "/stream?n=40&size=65536", "/sized?n=3"):
                c.request("GET", path)
                assert c.reply().status == 200
            c.request("GET", "/write")
            assert c.reply().body == b"written returned"
            c.request("GET", "/exc-info")  # start_response again with exc_info, before any byte
            r = c.reply()
            assert (r.status, r.body) == (503, b"unavailable")
        err = stop_cleanly(srv)
    for path, calls in (("/stream", 2), ("/sized", 1)):  # close() called once per iterable
        assert err.count(f"iterable closed: {path}\n") == calls, err[-3000:]


def test_app_errors(kind):
    with http_server(kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            for _ in range(2):
                c.request("GET", "/fail")
                r = c.reply()
                assert r.status == 500
                c.request("GET", "/")  # the connection goes on
                assert c.reply().body == b"hello"
        with HTTPClient(srv.host, srv.port) as c:
            c.request("GET", "/fail-midway")
            with pytest.raises(AssertionError, match="closed before a complete response"):
                c.reply()  # cut: the client sees an incomplete chunked body, then the close
        err = stop_cleanly(srv)
    assert err.count("Traceback") == 2, err[-4000:]  # each distinct error's traceback once
    assert err.count("service handle() failed") == 2  # one line per failed request
    assert "body failed midway (on purpose)" in err
    if kind[1] == "wsgi":  # WSGI's iterable is closed after a failure too (ASGI has none)
        assert "iterable closed: /fail-midway" in err


# -- limits -----------------------------------------------------------------------------------

def _refused(srv, raw: bytes, status: int) -> None:
    with HTTPClient(srv.host, srv.port) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.reply()
        assert r.status == status, r
        assert r.header("connection") == "close"
        assert c.closed()


def test_limits_and_malformed_requests(kind):
    with http_server(kind, "--max-header", "4096", "--max-body", "1000") as srv:
        _refused(srv, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 5000 + b"\r\n\r\n", 431)
        # a declared body over the limit: refused without sending (or reading) it
        _refused(srv, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", 413)
        _refused(srv, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"200\r\n" + b"y" * 512 + b"\r\n" + b"200\r\n" + b"y" * 512 + b"\r\n0\r\n\r\n", 413)
        _refused(srv, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400)
        _refused(srv, b"GET / HTTP/1.1\r\n\r\n", 400)  # HTTP/1.1 without Host
        with HTTPClient(srv.host, srv.port) as c:  # answered requests before a bad one stand
            c.send(get("/") + b"NOT HTTP\r\n\r\n")
            assert c.reply().body == b"hello"
            assert c.reply().status == 400
            assert c.closed()
        err = stop_cleanly(srv)
    assert "Traceback" not in err, err[-3000:]
    for status in ("431", "413", "400"):
        assert f"HTTP {status}:" in err, err[-3000:]
    assert err.count("HTTP 413:") == 2 and err.count("HTTP 400:") == 3


SMUGGLING = {
    "content-length with transfer-encoding": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                                             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /fail HTTP/1.1\r\n\r\n",
    "two content-lengths": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    "invalid content-length": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd",
    "chunk size overflow": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"FFFFFFFFFFFFFFFFF1\r\nab\r\n0\r\n\r\n",
    "whitespace before colon": b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 0\r\n\r\n",
    "control character": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
    "last coding not chunked": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\nab",
}


@pytest.mark.parametrize("case", list(SMUGGLING))
def test_no_request_smuggling(case):
    """RFC 9112 6.1, 6.3, 11.2: each is refused with 400 and a close, never answered as two
    requests. The parser is the same on every engine, so one engine suffices here."""
    with http_server(("thread", "wsgi")) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.send(SMUGGLING[case])
            r = c.reply()
            assert r.status == 400, r
            assert c.closed()


def test_request_timeout_408_and_idle_close(kind):
    with http_server(kind, "--request-timeout", "0.5", "--idle-timeout", "1") as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\n")  # headers never finished (slowloris)
            r = c.reply()
            assert r.status == 408
            assert c.closed()
        with HTTPClient(srv.host, srv.port) as c:
            c.request("GET", "/")
            assert c.reply().body == b"hello"
            assert c.closed(timeout=10)  # idle past --idle-timeout: closed without a byte
        err = stop_cleanly(srv)
    assert "request timeout" in err and "idle timeout" in err


def test_blocking_requests_overlap_and_errors_do_not_disturb_others(kind, tmp_path):
    """8 clients at once: 6 meet at a barrier inside the app (each request waits there until all 6
    are inside, so they must run at the same time; no clock is read), 2 hit a failing route."""
    errors = []
    meeting = tmp_path / "barrier"
    meeting.mkdir()

    def client(i):
        try:
            with HTTPClient(srv.host, srv.port, timeout=30) as c:
                if i < 2:
                    for _ in range(3):
                        c.request("GET", "/fail")
                        assert c.reply().status == 500
                c.request("GET", f"/barrier?dir={meeting}&n=6&id={i}" if i >= 2 else "/")
                r = c.reply()
                assert (r.status, r.body) == (200, b"met" if i >= 2 else b"hello"), r
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    with http_server(kind) as srv:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        err = stop_cleanly(srv)
    assert not errors, errors
    assert "requests=14 errors=0" in err, err[-2000:]


def test_a_streamed_body_that_blocks_does_not_stall_other_clients(wsgi_kind, tmp_path):
    """The body's generator blocks between pieces until another client's request arrives: it must
    run where blocking code runs (never on an event loop), or that request is never read."""
    with http_server(wsgi_kind) as srv:
        with HTTPClient(srv.host, srv.port, timeout=30) as a, HTTPClient(srv.host, srv.port) as b:
            a.request("GET", f"/stream-wait?dir={tmp_path}")
            assert a.recv_raw(b"first\n").startswith(b"HTTP/1.1 200 OK\r\n")
            b.request("GET", f"/touch?dir={tmp_path}")
            assert b.reply().body == b"touched"
            assert a.recv_raw(b"0\r\n\r\n").endswith(b"second\n\r\n0\r\n\r\n")


def test_close_is_called_when_the_client_leaves_mid_body(wsgi_kind):
    with http_server(wsgi_kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.request("GET", "/stream?n=2000&size=65536&delay=0.005")  # 128 MiB over ~10 s
            assert c.recv_raw(b"\r\n\r\n").startswith(b"HTTP/1.1 200 OK")
        # the client is gone: the server's writes fail, it abandons the body and must close() it
        with HTTPClient(srv.host, srv.port) as c:
            c.request("GET", "/")
            assert c.reply().body == b"hello"
        err = stop_cleanly(srv)
    assert "iterable closed: /stream\n" in err, err[-3000:]


def test_many_keep_alive_clients(kind):
    """100 concurrent keep-alive clients x 20 requests each: every response right, none lost."""
    errors = []

    def client(i):
        try:
            with HTTPClient(srv.host, srv.port, timeout=60) as c:
                for j in range(20):
                    c.request("GET", f"/environ?keys=QUERY_STRING&c={i}&r={j}")
                    assert c.reply().body == f"QUERY_STRING=keys=QUERY_STRING&c={i}&r={j}".encode()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    with http_server(kind) as srv:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        err = stop_cleanly(srv)
    assert not errors, errors[:5]
    assert "connections=100 requests=2000 errors=0" in err, err[-2000:]


def test_sigterm_finishes_the_response_in_flight_then_closes(kind, tmp_path):
    with http_server(kind) as srv:
        with HTTPClient(srv.host, srv.port, timeout=30) as c, HTTPClient(srv.host, srv.port) as idle:
            idle.request("GET", "/")
            assert idle.reply().body == b"hello"  # a keep-alive connection, idle at the stop
            c.request("GET", f"/barrier?dir={tmp_path}&n=2&id=a")  # in the app until "b" appears
            wait_for(lambda: (tmp_path / "a").exists(), 20, "the request to reach the app")
            srv.proc.send_signal(signal.SIGTERM)
            (tmp_path / "b").touch()
            r = c.reply()
            assert (r.status, r.body) == (200, b"met")
            assert c.closed(timeout=20) and idle.closed(timeout=20)
        assert srv.proc.wait(30) == 0


# -- ASGI only --------------------------------------------------------------------------------

@pytest.fixture(params=ASGI_ENGINES)
def asgi_engine(request):
    return request.param


def test_asgi_lifespan_runs_on_the_serving_loop(asgi_engine):
    with http_server((asgi_engine, "asgi")) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.request("GET", "/state")  # the state the startup set, copied into the request's scope
            assert c.reply().body == b"hello from lifespan"
        err = stop_cleanly(srv)
    workers = 2 if asgi_engine == "hybrid" else 1  # each hybrid worker has its own loop and lifespan;
    # multiloop's loops share one process, and its lifespan runs once, on the first loop
    assert err.count("lifespan shutdown") == workers, err[-3000:]


def test_asgi_app_without_lifespan_is_served(asgi_engine):
    with http_server((asgi_engine, "asgi"), app="multiserve.testing.asgi_apps:no_lifespan_app") as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.request("GET", "/")
            assert c.reply().body == b"no lifespan here"
        err = stop_cleanly(srv)
    assert "does not support lifespan" in err and "Traceback" not in err, err[-3000:]


def test_asgi_startup_failure_is_one_line(asgi_engine):
    """The server stops with one line (hybrid: a boot error, never a restart loop)."""
    with pytest.raises(RuntimeError, match="did not become ready") as info:
        with http_server((asgi_engine, "asgi"), app="multiserve.testing.asgi_apps:failing_startup_app"):
            pass
    assert "ASGI lifespan startup failed: database unreachable (on purpose)" in str(info.value)
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize("engine", [e for e in ENGINE_NAMES if e not in ASGI_ENGINES])
def test_asgi_is_refused_on_other_engines_in_one_line(engine):
    with pytest.raises(RuntimeError, match="did not become ready") as info:
        with http_server((engine, "asgi")):
            pass
    assert f"ASGI apps run on the event-loop engines ({', '.join(ASGI_ENGINES)})" in str(info.value)
    assert "Traceback" not in str(info.value)


def test_interface_auto_picks_by_the_kind_of_callable():
    for app, body in (("multiserve.testing.asgi_apps:app", b"hello"), ("multiserve.testing.wsgi_apps:app", b"hello")):
        with running_server("--engine", "asyncio", "--port", "0", "--protocol", "http", "--app", app) as srv:
            with HTTPClient(srv.host, srv.port) as c:
                c.request("GET", "/environ?keys=SERVER_PROTOCOL")
                assert c.reply().body == b"SERVER_PROTOCOL=HTTP/1.1"
    with pytest.raises(RuntimeError, match="is a coroutine function"):
        with http_server(("asyncio", "wsgi"), app="multiserve.testing.asgi_apps:app"):
            pass


# -- a real client ----------------------------------------------------------------------------

def test_curl_keep_alive_and_chunked_upload(kind, tmp_path):
    curl = real_client("curl")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(200_000))
    with http_server(kind) as srv:
        base = f"http://{srv.host}:{srv.port}"
        out = subprocess.run([curl, "-sS", "-v", "--max-time", "20", f"{base}/", f"{base}/environ"],
                             capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.startswith(b"hello")
        assert b"Re-using existing connection" in out.stderr  # keep-alive across the two URLs
        out = subprocess.run([curl, "-sS", "--max-time", "20", "-H", "Transfer-Encoding: chunked",
                              "--data-binary", f"@{upload}", f"{base}/echo"], capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout == upload.read_bytes()
        out = subprocess.run([curl, "-sS", "--max-time", "20", f"{base}/stream?n=100&size=100"],
                             capture_output=True, timeout=30)
        assert out.stdout == b"".join(bytes([65 + i % 26]) * 100 for i in range(100))
        stop_cleanly(srv)


def test_raw_socket_stays_in_step_after_partial_reads(kind):
    """A request split across many writes (byte by byte for the head) is answered once."""
    with http_server(kind) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for byte in b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n":
                c.send(bytes([byte]))
            c.send(b"abc")
            assert c.reply().body == b"abc"


__all__ = ["kind", "wsgi_kind", "asgi_engine"] + [name for name in dict(globals()) if name.startswith("test_")]
