"""--access-log (issue 15 item 5) on every engine (hybrid: 2 workers writing one file), both
protocols, TLS off and on: every line checked against what the client did. And the writer's
bound (a full queue drops and counts), standard output, a file that cannot be opened."""
from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys

import pytest

from multiserve import access_log
from multiserve.asgi import ASGI_ENGINES
from multiserve.engines import ENGINES
from multiserve.testing.server_process import running_server

pytestmark = pytest.mark.timeout(120)
CLIENTS, REQUESTS_EACH = 3, 4
APP = "multiserve.testing.wsgi_apps:app"
ASGI_APP = "multiserve.testing.asgi_apps:app"
CLF = re.compile(r'^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] "(.*)" (\d{3}) (\d+|-) (\d+\.\d{6})$')
CONNECTION = re.compile(r'^127\.0\.0\.1:(\d+) requests=(\d+) in=(\d+) out=(\d+) duration=(\d+\.\d{6}) closed="(.*)"$')


@pytest.fixture(params=list(ENGINES))
def engine(request):
    return request.param


def serve_args(engine: str, log) -> list[str]:
    return ["--engine", engine, "--port", "0", "--access-log", str(log),
            *(["--workers", "2"] if engine == "hybrid" else [])]


def stopped_lines(srv, log) -> list[str]:
    assert srv.stop(30) == 0
    err = srv.stderr_text()
    assert "Traceback" not in err, err[-3000:]
    return log.read_text().splitlines()


def line_clients(srv, tls=None) -> tuple[dict, bytes]:
    """CLIENTS connections of REQUESTS_EACH requests, closed by the client; then an oversized
    line. Returns {client port: (bytes sent, bytes received)} and the error reply."""
    sent = {}
    for i in range(CLIENTS):
        with srv.connect(tls=tls) as client:
            out = got = 0
            for j in range(REQUESTS_EACH):
                request = b"hello %d %d\n" % (i, j)
                client.send(request)
                reply = client.readline()
                assert reply == request.upper()
                out, got = out + len(request), got + len(reply)
            sent[client.sock.getsockname()[1]] = (out, got)
    with srv.connect(tls=tls) as bad:
        bad.send(b"x" * 200 + b"\n")
        error = bad.readline()
    return sent, error


def check_line_log(lines, sent, error) -> None:
    assert len(lines) == CLIENTS + 1, lines
    parsed = [CONNECTION.match(line) for line in lines]
    assert all(parsed), lines
    served = {int(m.group(1)): m for m in parsed if m.group(6) == "client closed"}
    assert set(served) == set(sent), lines
    for port, m in served.items():
        assert (int(m.group(2)), int(m.group(3)), int(m.group(4))) == (REQUESTS_EACH, *sent[port])
    (refused,) = [m for m in parsed if m.group(6) != "client closed"]
    assert refused.group(6).startswith("line too long"), refused.group(0)
    assert int(refused.group(2)) == 0 and int(refused.group(4)) == len(error)
    assert 64 < int(refused.group(3)) <= 201  # past --max-line 64, at most what was sent


def http_clients(srv, tls=None) -> None:
    """CLIENTS keep-alive connections: GET /, GET /nope (404), HEAD /, GET /stream (chunked,
    its length unknown to the log); then headers past --max-header (431, no request line)."""
    for i in range(CLIENTS):
        conn = (http.client.HTTPSConnection(srv.host, srv.port, context=tls, timeout=10) if tls
                else http.client.HTTPConnection(srv.host, srv.port, timeout=10))
        with contextlib.closing(conn):
            for method, path, status in (("GET", "/", 200), ("GET", "/nope", 404), ("HEAD", "/", 200),
                                         ("GET", "/stream?n=3&size=4", 200)):
                conn.request(method, path)
                reply = conn.getresponse()
                reply.read()
                assert reply.status == status
    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    if tls:
        sock = tls.wrap_socket(sock, server_hostname=srv.host)
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 600 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 431")


def check_http_log(lines) -> None:
    assert len(lines) == CLIENTS * REQUESTS_EACH + 1, lines
    parsed = [CLF.match(line) for line in lines]
    assert all(parsed), lines
    fields = sorted((m.group(1), m.group(2), m.group(3)) for m in parsed)
    expected = sorted([("GET / HTTP/1.1", "200", "5"), ("GET /nope HTTP/1.1", "404", "9"),
                       ("HEAD / HTTP/1.1", "200", "0"), ("GET /stream?n=3&size=4 HTTP/1.1", "200", "-")] * CLIENTS
                      + [("-", "431", str(len("request line and headers over 256 bytes\n")))])
    assert fields == expected
    assert all(float(m.group(4)) < 60 for m in parsed)


def test_line_protocol_a_line_per_connection(engine, tmp_path):
    log = tmp_path / "access.log"
    with running_server(*serve_args(engine, log), "--max-line", "64") as srv:
        sent, error = line_clients(srv)
        check_line_log(stopped_lines(srv, log), sent, error)


def test_http_a_line_per_request(engine, tmp_path):
    log = tmp_path / "access.log"
    with running_server(*serve_args(engine, log), "--protocol", "http", "--app", APP, "--max-header", "256") as srv:
        http_clients(srv)
        check_http_log(stopped_lines(srv, log))


@pytest.mark.parametrize("engine", ["asyncio", "threadpool", "hybrid"])
@pytest.mark.parametrize("protocol", ["line", "http"])
def test_access_log_over_tls(engine, protocol, tmp_path):
    from test_tls import make_cert  # the TLS tests' certificate maker (openssl)

    cert, key = make_cert(tmp_path, "server", "localhost")
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    log = tmp_path / "access.log"
    tls = ["--certfile", str(cert), "--keyfile", str(key)]
    if protocol == "line":
        with running_server(*serve_args(engine, log), *tls, "--max-line", "64") as srv:
            sent, error = line_clients(srv, tls=context)
            check_line_log(stopped_lines(srv, log), sent, error)
    else:
        with running_server(*serve_args(engine, log), *tls, "--protocol", "http", "--app", APP,
                            "--max-header", "256") as srv:
            http_clients(srv, tls=context)
            check_http_log(stopped_lines(srv, log))


def test_access_log_to_standard_output():
    proc = subprocess.Popen([sys.executable, "-m", "multiserve", "serve", "--port", "0", "--access-log", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        ready = proc.stdout.readline().decode()
        host, port = re.search(r"listening on (\S+):(\d+)", ready).groups()
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"hi\n")
            assert sock.recv(10) == b"HI\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    (line,) = out.decode().splitlines()
    m = CONNECTION.match(line)
    assert m and m.group(2, 3, 4, 6) == ("1", "3", "3", "client closed"), line


def test_an_access_log_that_cannot_be_opened_is_one_error_line(tmp_path):
    path = tmp_path / "missing" / "access.log"
    proc = subprocess.run([sys.executable, "-m", "multiserve", "serve", "--port", "0", "--access-log", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--access-log: cannot open {path}" in lines[0], proc.stderr


def test_a_full_queue_drops_lines_counts_them_and_says_so_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(access_log, "QUEUE_LIMIT", 3)
    writer = access_log.AccessLog(str(tmp_path / "a.log"))
    writer._pid = os.getpid()  # as if open() had run, without its writer thread: nothing drains
    entry = ("connection", ("127.0.0.1", 1), 1, 2, 3, 0.5, "client closed")
    with caplog.at_level("WARNING", logger="multiserve.access_log"):
        for _ in range(10):
            writer.put(entry)
    assert len(writer.queue) == 3 and writer.dropped == 7
    assert sum("dropping lines" in r.getMessage() for r in caplog.records) == 1


def test_lines_are_written_whole_in_pipe_sized_writes(tmp_path):
    path = tmp_path / "a.log"
    writer = access_log.AccessLog(str(path), sync=True)
    writer.open()
    long_target = "/" + "a" * 5000
    writer._write([access_log.format_request(("request", ("1.2.3.4", 5), 0.0, "GET", long_target, "1.1", 200, 1, 0.0))]
                  + [access_log.format_entry(("connection", ("1.2.3.4", 5), 1, 2, 3, 0.5, 'a "quoted" reason'))] * 100)
    writer.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 101 and lines[0].startswith('1.2.3.4 - - [01/Jan/1970:00:00:00 +0000] "GET /aaa')
    assert lines[1] == r'1.2.3.4:5 requests=1 in=2 out=3 duration=0.500000 closed="a \"quoted\" reason"'


def test_clf_escapes_what_would_break_a_line():
    line = access_log.format_request(("request", ("::1", 5, 0, 0), 86400.0, "GET", b'/a"b\n', "1.1", 200, None, 1.5))
    assert line == '::1 - - [01/Jan/1970:23:59:58 +0000] "GET /a\\"b\\x0a HTTP/1.1" 200 - 1.500000\n'


@pytest.mark.parametrize("engine", ASGI_ENGINES)
def test_asgi_a_line_per_request(engine, tmp_path):
    """An ASGI app's requests take the event loops' one-task path (Session.answer_soon): logged
    the same."""
    log = tmp_path / "access.log"
    with running_server(*serve_args(engine, log), "--protocol", "http", "--app", ASGI_APP,
                        "--max-header", "256") as srv:
        http_clients(srv)
        check_http_log(stopped_lines(srv, log))
