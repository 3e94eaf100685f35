"""examples/demo_app.py, the app ``compare --protocol http`` serves by default: every route on one
engine per interface (threadpool for WSGI, asyncio for ASGI), real server, raw-socket client."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest

from multiserve.testing import running_server
from multiserve.testing.http_client import HTTPClient

pytestmark = pytest.mark.timeout(60)

KINDS = [("threadpool", "examples.demo_app:app"), ("asyncio", "examples.demo_app:asgi_app")]


@contextlib.contextmanager
def demo(kind, env=None):
    engine, app = kind
    with running_server("--engine", engine, "--port", "0", "--protocol", "http", "--app", app,
                        "--log-level", "warning", env=env) as srv:
        yield HTTPClient(srv.host, srv.port)


@pytest.fixture(params=KINDS, ids=[k[0] for k in KINDS])
def kind(request):
    return request.param


# (method, path, status, body)
ROUTES = [
    ("GET", "/", 200, b"HELLO\n"),
    ("GET", "/hello", 200, b"HELLO\n"),
    ("GET", "/sleep/20", 200, b"HELLO\n"),
    ("GET", "/cpu/1", 200, b"HELLO\n"),
    ("GET", "/sleep/x", 404, b"expected /sleep/MS or /cpu/MS\n"),
    ("GET", "/nope", 404, b"not found\n"),
    ("PUT", "/tickets", 405, b"GET or POST /tickets\n"),
]


def test_workload_routes_on_one_keep_alive_connection(kind):
    with demo(kind) as client:
        for method, path, status, body in ROUTES:
            started = time.monotonic()
            client.request(method, path)
            reply = client.reply()
            assert (reply.status, reply.body) == (status, body), (method, path)
            assert reply.header("content-length") == str(len(body))
            if path == "/sleep/20":
                assert time.monotonic() - started >= 0.02  # it did wait (a lower bound, not a speed)


def test_tickets_over_the_ticket_store(kind, tmp_path):
    store = f"sqlite:{tmp_path / 'tickets.db'}"
    init = subprocess.run([sys.executable, "-m", "multiserve", "tickets", "init", "--store", store, "--count", "2"],
                          capture_output=True, text=True, timeout=30)
    assert init.returncode == 0, init.stderr
    env = {**os.environ, "MULTISERVE_DEMO_STORE": store}
    with demo(kind, env=env) as client:
        steps = [("GET", "/tickets", 200, b"LEFT 2\n"), ("POST", "/tickets?buyer=ann", 200, b"SOLD 1 ann\n"),
                 ("POST", "/tickets?buyer=bob", 200, b"SOLD 2 bob\n"), ("POST", "/tickets?buyer=cy", 409, b"SOLDOUT\n"),
                 ("POST", "/tickets?buyer=", 400, None), ("GET", "/tickets", 200, b"LEFT 0\n")]
        for method, path, status, body in steps:
            client.request(method, path, headers=[("Content-Length", "0")] if method == "POST" else ())
            reply = client.reply()
            assert reply.status == status, (path, reply)
            if body is not None:
                assert reply.body == body, path
            else:
                assert reply.body.startswith(b"ERR BUY needs a buyer")
    check = subprocess.run([sys.executable, "-m", "multiserve", "tickets", "check", "--store", store],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr  # never oversold, ledger consistent


def test_an_uninitialised_store_is_503(kind, tmp_path):
    env = {**os.environ, "MULTISERVE_DEMO_STORE": f"sqlite:{tmp_path / 'none.db'}"}
    with demo(kind, env=env) as client:
        client.request("GET", "/tickets")
        reply = client.reply()
    assert reply.status == 503 and reply.body.startswith(b"ERR store unavailable")
