"""``multiserve bench http://...``: real servers (multiserve's HTTP engines, and raw-socket servers
that misbehave on purpose), the real CLI; statuses, bodies and broken responses counted by kind."""
from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading

import pytest

from multiserve.loadgen.http import HttpRequest, parse_header, parse_url
from multiserve.testing import running_server

pytestmark = pytest.mark.timeout(90)

DEMO = "examples.demo_app:app"


def bench(*args):
    return subprocess.run([sys.executable, "-m", "multiserve", "bench", *args, "--quiet", "--json", "-"],
                          capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def demo_server(engine="threadpool", app=DEMO):
    with running_server("--engine", engine, "--port", "0", "--protocol", "http", "--app", app,
                        "--log-level", "warning") as srv:
        yield f"http://{srv.host}:{srv.port}"


# (path, --expect-body or None, exit code, what the JSON must show)
CHECKS = [
    ("/hello", "HELLO\n", 0, "clean"),
    ("/hello", "something else", 1, "every reply a mismatch"),
    ("/nope", None, 1, "every reply http_404"),
]


@pytest.mark.parametrize("path,expect,code,shows", CHECKS, ids=[c[3] for c in CHECKS])
def test_status_and_body_are_checked(path, expect, code, shows):
    with demo_server() as url:
        extra = ["--expect-body", expect] if expect is not None else []
        r = bench(url + path, "-c", "4", "-d", "0.5", "--processes", "1", *extra)
    assert r.returncode == code, r.stderr
    data = json.loads(r.stdout)
    assert data["protocol"] == "http" and data["target"] == url + path
    assert data["requests"] > 0
    if shows == "clean":
        assert data["errors"] == {} and data["mismatches"] == 0
    elif shows == "every reply a mismatch":
        assert data["errors"] == {} and data["mismatches"] >= data["requests"]
        assert data["mismatch_examples"][0] == {"got": "HELLO\n", "expected": "something else"}
        assert "mismatched replies" in r.stderr
    else:
        assert set(data["errors"]) == {"http_404"} and data["errors"]["http_404"] >= data["requests"]
        assert "non-2xx status (" in r.stderr and "http_404" in r.stderr


@pytest.mark.parametrize("args", [["--body", "abc", "--expect-body", "abc"],
                                  ["--body-size", "3000", "--pipeline", "4"]], ids=["body", "body-size-pipelined"])
def test_request_bodies_and_pipelining(args):
    with demo_server(app="examples.hello_wsgi:app") as url:
        r = bench(url + "/echo", "-c", "2", "-d", "0.5", "--processes", "1", *args)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["requests"] > 0 and data["errors"] == {} and data["mismatches"] == 0


def test_open_loop_over_http():
    with demo_server(engine="asyncio", app="examples.demo_app:asgi_app") as url:
        r = bench(url + "/hello", "-c", "4", "-d", "1", "--rate", "400", "--processes", "1",
                  "--expect-body", "HELLO\n")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["mode"] == "open" and data["errors"] == {} and data["mismatches"] == 0
    assert 300 <= data["rate_achieved"] <= 450
    assert data["latency_us"]["p50"] >= data["latency_uncorrected_us"]["p50"]


# -- servers that misbehave: raw sockets, one thread per connection -------------------------
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
BEHAVIOURS = {
    # a full response, then the connection ends: a well-behaved HTTP/1.1 close (no error)
    "close": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
    # 100 bytes announced, 3 sent, closed: the request is lost
    "truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok\n",
    # not HTTP at all
    "garbage": b"HELLO THERE\r\n\r\n",
}


@contextlib.contextmanager
def raw_server(reply: bytes):
    """Answers every request on a connection with ``reply``, then closes that connection; stops
    (and joins its threads) at the end."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    listener.settimeout(0.2)
    stop = threading.Event()
    threads = []

    def client(sock):
        with sock:
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                if sock.recv(65536):
                    sock.sendall(reply)

    def accept():
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            t = threading.Thread(target=client, args=(sock,), daemon=True)
            t.start()
            threads.append(t)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for t in threads:
            t.join(5)


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_broken_and_closing_servers_are_counted_by_kind(behaviour):
    with raw_server(BEHAVIOURS[behaviour]) as url:
        r = bench(url + "/", "-c", "2", "-d", "0.5", "--processes", "1", "--reply-timeout", "2")
    data = json.loads(r.stdout)
    if behaviour == "close":  # each request on a new connection, none an error
        assert r.returncode == 0, r.stderr
        assert data["requests"] > 0 and data["errors"] == {} and data["mismatches"] == 0
    elif behaviour == "truncated":
        assert r.returncode == 1
        assert data["requests"] == 0 and data["errors"].get("lost", 0) > 0
        assert set(data["errors"]) == {"lost"}
    else:
        assert r.returncode == 1
        assert data["requests"] == 0 and data["errors"].get("bad_response", 0) > 0 and data["mismatches"] > 0


# -- bad input: one line, exit 2 --------------------------------------------------------------
BAD = [
    (["127.0.0.1:1", "--body", "x"], "--body needs an http://"),
    (["127.0.0.1:1", "--expect-body", "x"], "--expect-body needs an http://"),
    (["https://127.0.0.1:1/"], "https is not supported"),
    (["http://127.0.0.1:1/", "--header", "no colon"], "expected 'Name: value'"),
    (["http://127.0.0.1:1/", "--method", "G E T"], "is not an HTTP token"),
    (["http://127.0.0.1:1/", "--body", "x", "--body-size", "3"], "not allowed with argument"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_bad_http_options_are_one_line(args, message):
    r = subprocess.run([sys.executable, "-m", "multiserve", "bench", *args], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_request_bytes():
    assert HttpRequest("/a?b=1").wire("h", 8) == b"GET /a?b=1 HTTP/1.1\r\nHost: h:8\r\n\r\n"
    req = HttpRequest("/", "POST", (("Host", "x"), ("X-A", "1")), b"hi")
    assert req.wire("h", 8) == b"POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nhi"
    assert parse_url("http://127.0.0.1:81/p?q") == ("127.0.0.1", 81, "/p?q")
    assert parse_url("http://localhost") == ("localhost", 80, "/")
    assert parse_header("X-Token:  abc ") == ("X-Token", "abc")
    with pytest.raises(ValueError, match="Transfer-Encoding"):
        HttpRequest(headers=(("Transfer-Encoding", "chunked"),)).validate()
