"""--metrics-port (issue 15 item 4): /metrics read over real HTTP from a real server on every
engine (hybrid with 2 workers), both protocols, TLS off and on; its counters checked against what
the client sent. And the meters' own rules (hybrid rows outlive their workers)."""
from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from multiserve.asgi import ASGI_ENGINES
from multiserve.engines import ENGINES
from multiserve.meter import BOUNDS_NS, CONNECTIONS, OPEN, OWNER, WorkerMeter, error_kind, record, requests
from multiserve.testing.server_process import running_server

pytestmark = pytest.mark.timeout(120)
ENGINE_NAMES = list(ENGINES)
CLIENTS, REQUESTS_EACH = 3, 4
APP = "multiserve.testing.wsgi_apps:app"
ASGI_APP = "multiserve.testing.asgi_apps:app"


def engine_args(engine: str) -> list[str]:
    return ["--engine", engine, "--port", "0", "--metrics-port", "0", *(["--workers", "2"] if engine == "hybrid" else [])]


def scrape(srv) -> dict:
    """{(name, labels as a sorted tuple): value} of every sample on /metrics, parsed by
    prometheus-client's own parser (so the text is valid exposition format)."""
    address = re.search(rb"metrics=(\S+)", srv.stdout_seen).group(1).decode()
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def scrape_until(srv, done) -> dict:
    """Scrape until ``done(samples)``, or 15 s: the server's closes are asynchronous to the client."""
    deadline = time.monotonic() + 15
    while True:
        samples = scrape(srv)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def scrape_until_open(srv, open_connections: int) -> dict:
    """... until the server has seen the clients we closed go."""
    return scrape_until(srv, lambda samples: samples[("multiserve_connections_open", ())] == open_connections)


def line_load(srv, tls=None) -> list:
    """CLIENTS connections x REQUESTS_EACH requests, left open; then one oversized line (its
    connection gets ERR and is closed by the client)."""
    clients = []
    for i in range(CLIENTS):
        client = srv.connect(tls=tls)
        for j in range(REQUESTS_EACH):
            client.send(b"hello %d %d\n" % (i, j))
            assert client.readline() == b"HELLO %d %d\n" % (i, j)
        clients.append(client)
    bad = srv.connect(tls=tls)
    bad.send(b"x" * 200 + b"\n")
    assert bad.readline().startswith(b"ERR")
    bad.close()
    return clients


def http_load(srv, tls=None) -> list:
    """The same over HTTP: keep-alive connections, then a request whose headers pass --max-header."""
    clients = []
    for i in range(CLIENTS):
        conn = (http.client.HTTPSConnection(srv.host, srv.port, context=tls, timeout=10) if tls
                else http.client.HTTPConnection(srv.host, srv.port, timeout=10))
        for j in range(REQUESTS_EACH):
            conn.request("GET", "/")
            reply = conn.getresponse()
            assert (reply.status, reply.read()) == (200, b"hello")
        clients.append(conn)
    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    if tls:
        sock = tls.wrap_socket(sock, server_hostname=srv.host)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 600 + b"\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 431")
    sock.close()
    return clients


PROTOCOLS = {"line": (["--max-line", "64"], line_load),
             "http": (["--protocol", "http", "--app", APP, "--max-header", "256"], http_load)}


def check_counts(samples, engine: str) -> None:
    value = lambda name, **labels: samples[(name, tuple(sorted(labels.items())))]  # noqa: E731
    sent = CLIENTS * REQUESTS_EACH
    assert value("multiserve_requests_total") == sent
    assert value("multiserve_connections_total") == CLIENTS + 1
    assert value("multiserve_connections_open") == CLIENTS
    assert value("multiserve_errors_total", kind="protocol") == 1
    for kind in ("timeout", "tls", "io", "service"):
        assert value("multiserve_errors_total", kind=kind) == 0, kind
    assert value("multiserve_request_duration_seconds_count") == sent
    assert value("multiserve_request_duration_seconds_bucket", le="+Inf") == sent
    buckets = [value("multiserve_request_duration_seconds_bucket", le=repr(b / 1e9)) for b in BOUNDS_NS]
    assert buckets == sorted(buckets)  # cumulative
    assert 0 < value("multiserve_request_duration_seconds_sum") < 10 * sent
    if engine == "hybrid":  # per worker, adding up to the totals
        for name, total in (("requests_total", sent), ("connections_total", CLIENTS + 1), ("connections_open", CLIENTS)):
            per_worker = {labels: v for (n, labels), v in samples.items() if n == f"multiserve_worker_{name}"}
            assert len(per_worker) == 2 and sum(per_worker.values()) == total, (name, per_worker)
    else:
        assert not any(n.startswith("multiserve_worker_") for n, _ in samples)


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_metrics_count_what_the_client_sent(engine_name, protocol):
    args, load = PROTOCOLS[protocol]
    serve_and_check_counts(engine_name, args, load)


def serve_and_check_counts(engine: str, args: list, load, tls=None) -> None:
    """A metered server of ``engine`` under ``load(srv)`` (over TLS with the client context
    ``tls``): its /metrics agree with the clients."""
    with running_server(*engine_args(engine), *args) as srv:
        clients = load(srv) if tls is None else load(srv, tls=tls)
        try:
            check_counts(scrape_until_open(srv, CLIENTS), engine)
        finally:
            for client in clients:
                client.close()
        assert srv.stop(30) == 0
        assert "Traceback" not in srv.stderr_text()


@pytest.fixture(params=ENGINE_NAMES)
def engine_name(request):
    return request.param


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@pytest.mark.parametrize("engine", ["asyncio", "threadpool", "hybrid"])
def test_metrics_over_tls(engine, protocol, tmp_path):
    from test_tls import make_cert  # the TLS tests' certificate maker (openssl)

    cert, key = make_cert(tmp_path, "server", "localhost")
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    args, load = PROTOCOLS[protocol]
    serve_and_check_counts(engine, [*args, "--certfile", str(cert), "--keyfile", str(key)], load, tls=context)


def test_a_failed_handshake_counts_as_a_tls_error(engine_name, tmp_path):
    from test_tls import make_cert

    cert, key = make_cert(tmp_path, "server", "localhost")
    with running_server(*engine_args(engine_name), "--certfile", str(cert), "--keyfile", str(key)) as srv:
        with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
            sock.sendall(b"plain text\n")
            with contextlib.suppress(ConnectionResetError):
                sock.recv(100)  # the server closes (a reset: it did not read what we sent)
        # the client may see the close before the server has counted it: wait for the session's
        # end (its error is counted before it)
        samples = scrape_until(srv, lambda samples: samples[("multiserve_connections_total", ())] == 1
                               and samples[("multiserve_connections_open", ())] == 0)
        assert samples[("multiserve_errors_total", (("kind", "tls"),))] == 1
        assert samples[("multiserve_requests_total", ())] == 0


@pytest.mark.parametrize("engine", ["threadpool", "hybrid"])
def test_a_raising_service_counts_service_errors(engine):
    with running_server(*engine_args(engine), "--service", "multiserve.testing.sample_services:FailingService") as srv:
        with srv.connect() as c:
            assert c.request(b"fail once\n") == b"ERR service error\n"
            assert c.request(b"still here\n") == b"STILL HERE\n"
            assert c.request(b"fail twice\n") == b"ERR service error\n"
            samples = scrape(srv)
        assert samples[("multiserve_errors_total", (("kind", "service"),))] == 2
        assert samples[("multiserve_requests_total", ())] == 3  # a failed request is answered too


def test_metrics_port_in_use_is_one_error_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "multiserve", "serve", "--port", "0", "--metrics-port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--metrics-port: cannot bind 127.0.0.1:{port}" in lines[0], proc.stderr


def test_no_metrics_port_means_the_plain_session():
    from multiserve.config import make_config
    from multiserve.server import make_observer

    assert make_observer(make_config()) is None


# -- the meters' rules, in process ---------------------------------------------------------------

def test_buckets_are_the_bit_length_of_the_duration():
    from multiserve.meter import BUCKETS, new_tally

    tally = new_tally()
    for ns in (1, BOUNDS_NS[0] - 1, BOUNDS_NS[0], BOUNDS_NS[-1] * 4):
        record(tally, ns)
    assert requests(tally) == 4
    assert tally[BUCKETS] == 2 and tally[BUCKETS + 1] == 1 and tally[-1] == 1


def test_error_kinds():
    from multiserve.protocol.base import ProtocolError

    bad = ProtocolError(b"ERR\n", "line too long")
    assert error_kind("line too long", bad) == "protocol"
    assert error_kind("idle timeout", None) == "timeout"
    assert error_kind("request timeout", None) == "timeout"
    assert error_kind("send made no progress for 5s (client not reading); closed", None) == "timeout"
    assert error_kind("TLS handshake failed: [SSL: HTTP_REQUEST] http request", None) == "tls"
    assert error_kind("reset by client", None) == "io"


def test_a_hybrid_row_outlives_its_worker():
    """A replaced worker's counts stay (counters never go down); its open connections do not."""
    meter = WorkerMeter(workers=1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker: claims a row, serves two connections, one still open, dies
        try:
            meter.open()
            meter.opened(None)
            row = meter.opened(None)
            record(row, 1000)
            os.write(w, b"x")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    (sample,) = meter.snapshot()
    assert sample.counts[CONNECTIONS] == 2 and requests(sample.counts) == 1 and sample.counts[OWNER] == pid
    os.waitpid(pid, 0)
    (sample,) = meter.snapshot()
    assert sample.open == 0 and sample.counts[CONNECTIONS] == 2  # the dead worker's connections are gone
    meter.open()  # its successor (here: this process) takes the free row back
    (sample,) = meter.snapshot()
    assert sample.counts[OWNER] == os.getpid() and sample.counts[OPEN] == 0 and sample.counts[CONNECTIONS] == 2


@pytest.mark.parametrize("engine", ASGI_ENGINES)
def test_metrics_count_an_asgi_apps_requests(engine):
    """An ASGI app's requests take the event loops' one-task path (Session.answer_soon): counted
    and timed the same."""
    serve_and_check_counts(engine, ["--protocol", "http", "--app", ASGI_APP, "--max-header", "256"], http_load)
