"""The WSGI adapter (PEP 3333) alone: environ, start_response's rules, close() on every path."""
from __future__ import annotations

import sys

import pytest

from multiserve.config import make_config
from multiserve.protocol.http import HTTPProtocol, Response
from multiserve.services.base import Connection
from multiserve.apps import app_service
from multiserve.wsgi import StartResponse, WSGIService


def request(raw: bytes):
    [req] = HTTPProtocol().receive_data(raw)
    return req


def call(app, raw=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") -> Response:
    return WSGIService(app).handle(request(raw), Connection(("10.0.0.1", 5555)))


def test_environ():
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        seen["body"] = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b""]

    call(app, b"POST /a%20b/c?x=1&y=%20 HTTP/1.1\r\nHost: example.org:8000\r\nContent-Type: text/plain\r\n"
              b"X-Multi: 1\r\nX-Multi: 2\r\nX_Spoof: no\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert seen["REQUEST_METHOD"] == "POST" and seen["PATH_INFO"] == "/a b/c" and seen["QUERY_STRING"] == "x=1&y=%20"
    assert seen["SERVER_NAME"] == "example.org" and seen["SERVER_PORT"] == "8000"
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1" and seen["SCRIPT_NAME"] == ""
    assert seen["CONTENT_TYPE"] == "text/plain" and seen["CONTENT_LENGTH"] == "3" and seen["body"] == b"abc"
    assert seen["HTTP_X_MULTI"] == "1,2" and "HTTP_X_SPOOF" not in seen
    assert seen["REMOTE_ADDR"] == "10.0.0.1" and seen["REMOTE_PORT"] == "5555"
    assert seen["wsgi.version"] == (1, 0) and seen["wsgi.url_scheme"] == "http" and seen["wsgi.input_terminated"]


def test_start_response_rules():
    sr = StartResponse()
    sr("200 OK", [("A", "b")])
    with pytest.raises(RuntimeError, match="second time"):
        sr("200 OK", [])
    try:
        raise ValueError("x")
    except ValueError:
        sr("500 Oops", [], sys.exc_info())  # not sent yet: replaces
    assert (sr.status, sr.reason) == (500, "Oops")
    sr.sent = True
    with pytest.raises(ValueError, match="x"):
        try:
            raise ValueError("x")
        except ValueError:
            sr("500 Oops", [], sys.exc_info())  # sent: re-raised
    for bad in ([("X", "a\r\nInjected: 1")], [("X:", "a")], [(b"X", "a")], [("X", 1)]):
        with pytest.raises(ValueError):
            StartResponse()("200 OK", bad)
    with pytest.raises(ValueError):
        StartResponse()("OK", [])


class Tracked:
    def __init__(self, pieces, fail=False):
        self.pieces, self.fail, self.closed = pieces, fail, 0

    def __iter__(self):
        if self.fail:
            raise RuntimeError("first piece failed")
        return iter(self.pieces)

    def close(self):
        self.closed += 1


def test_close_on_every_path():
    body = Tracked([b"a", b"b"])

    def app(environ, start_response):
        start_response("200 OK", [])
        return body

    response = call(app)
    assert body.closed == 0  # still to be written
    protocol = HTTPProtocol()
    protocol.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert b"".join(protocol.send(response)).endswith(b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n")
    assert body.closed == 1
    failing = Tracked([], fail=True)

    def failing_app(environ, start_response):
        start_response("200 OK", [])
        return failing

    with pytest.raises(RuntimeError):
        call(failing_app)
    assert failing.closed == 1
    empty = Tracked([])

    def no_start(environ, start_response):
        return empty

    with pytest.raises(RuntimeError, match="without calling start_response"):
        call(no_start)
    assert empty.closed == 1


def test_generator_app_calls_start_response_late_and_write():
    def app(environ, start_response):
        write = start_response("201 Created", [("X", "y")])
        write(b"w1 ")
        yield b""
        yield b"g1"

    response = call(app)
    assert response.status == 201 and response.headers == [(b"X", b"y")]
    assert b"".join(response.body) == b"w1 g1"


def test_app_service_refusals(tmp_path):
    with pytest.raises(ValueError, match="--protocol http"):
        app_service(make_config(app="multiserve.testing.wsgi_apps:app"))
    with pytest.raises(ValueError, match="cannot import app module"):
        app_service(make_config(protocol="http", app="no.such:app"))
    with pytest.raises(ValueError, match="expected module:name"):
        app_service(make_config(protocol="http", app="justaname"))
    assert isinstance(app_service(make_config(protocol="http", app="multiserve.testing.wsgi_apps:app")), WSGIService)


def test_cli_refuses_http_without_an_app_in_one_line():
    from multiserve.testing.server_process import running_server

    with pytest.raises(RuntimeError, match="did not become ready") as info:
        with running_server("--port", "0", "--protocol", "http", ready_timeout=15):
            pass
    assert "add --app module:name" in str(info.value) and "Traceback" not in str(info.value)


@pytest.mark.parametrize("app, engine", [("examples.hello_wsgi:app", "threadpool"), ("examples.hello_asgi:app", "asyncio")])
def test_readme_example_apps(app, engine):
    """examples/hello_wsgi.py and hello_asgi.py, served as the README shows."""
    import os

    from multiserve.testing.http_client import HTTPClient
    from multiserve.testing.server_process import running_server

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with running_server("--port", "0", "--protocol", "http", "--app", app, "--engine", engine, cwd=root) as srv:
        with HTTPClient(srv.host, srv.port) as c:
            c.request("GET", "/")
            assert c.reply().body == b"hello\n"
            c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nsome\r\n0\r\n\r\n")
            assert c.reply().body == b"some"
            c.request("GET", "/stream?n=3")
            r = c.reply()
            assert r.body == b"line 0\nline 1\nline 2\n" and r.header("transfer-encoding") == "chunked"
        assert srv.stop(30) == 0


def test_asterisk_form_target():
    seen = {}

    def app(environ, start_response):
        seen["path"] = environ["PATH_INFO"]
        start_response("200 OK", [])
        return [b""]

    call(app, b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert seen["path"] == "*"


def test_pipelined_streamed_replies_are_pulled_as_written():
    """answer_all over pipelined requests: a streamed body is pulled while being written, not
    gathered first (a large download is never held whole)."""
    from multiserve.session import Session

    pulled = []

    def app(environ, start_response):
        start_response("200 OK", [])

        def body():
            for i in range(3):
                pulled.append(i)
                yield b"x" * 10

        return body()

    session = Session(WSGIService(app), HTTPProtocol())
    requests = session.receive(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" * 2)
    reply = session.answer_all(requests)
    assert pulled == [0, 0]  # each app's first piece (headers are committed there), no more
    pieces = list(reply)
    assert pulled == [0, 0, 1, 2, 1, 2] and b"".join(pieces).count(b"HTTP/1.1 200 OK") == 2
