"""TLS on every engine (issue 15 item 1): Python's ssl client and ``openssl s_client`` against a
certificate made here with the ``openssl`` command; a plain-text client and stalled handshakes
cost one log line each; client certificates; bad TLS settings are one line."""
from __future__ import annotations

import select
import shutil
import ssl
import subprocess
import sys
import time

import pytest

from multiserve.engines import ENGINES
from multiserve.testing.server_process import running_server

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")]


def make_cert(directory, name: str, cn: str):
    """A self-signed certificate (CA:TRUE, so it can also be the CA a peer checks against)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    server = make_cert(directory, "server", "localhost")
    client = make_cert(directory, "client", "a client")
    return {"server": server, "client": client}


@pytest.fixture(params=list(ENGINES))
def engine(request):
    return request.param


def tls_args(certs, *more):
    cert, key = certs["server"]
    return ("--certfile", str(cert), "--keyfile", str(key), *more)


def client_context(certs, with_cert=False):
    context = ssl.create_default_context(cafile=str(certs["server"][0]))
    if with_cert:
        context.load_cert_chain(*map(str, certs["client"]))
    return context


def stopped(srv) -> str:
    assert srv.stop(30) == 0
    err = srv.stderr_text()
    assert "Traceback" not in err, err[-3000:]
    return err


def test_python_ssl_client(engine, certs):
    with running_server("--engine", engine, "--port", "0", *tls_args(certs)) as srv:
        context = client_context(certs)
        with srv.connect(tls=context) as a, srv.connect(tls=context) as b, srv.connect(tls=context) as idle:
            assert a.sock.version() in ("TLSv1.2", "TLSv1.3")
            assert a.request(b"over tls\n") == b"OVER TLS\n"
            b.send(b"one\ntwo\nthree\n")  # pipelined: three requests in one TLS record
            assert [b.readline() for _ in range(3)] == [b"ONE\n", b"TWO\n", b"THREE\n"]
            assert a.request(b"again\n") == b"AGAIN\n"
            assert idle.request(b"then idle\n") == b"THEN IDLE\n"
            err = stopped(srv)  # with three TLS connections still open, idle: a graceful drain
    assert "stopped: connections=3 requests=6 errors=0" in err, err[-3000:]


def test_a_large_reply_over_tls(engine, certs):
    """2 MiB each way: many TLS records, and writes that wait for the client to read."""
    line = bytes(range(97, 123)) * (2 * 1024 * 1024 // 26) + b"\n"
    with running_server("--engine", engine, "--port", "0", "--service", "echo", "--max-line", str(4 << 20),
                        *tls_args(certs)) as srv:
        with srv.connect(tls=client_context(certs), timeout=30) as c:
            c.send(line)
            assert c.readline() == line
            assert c.request(b"small after\n") == b"small after\n"
        stopped(srv)


def test_openssl_s_client(engine, certs):
    with running_server("--engine", engine, "--port", "0", *tls_args(certs)) as srv:
        proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-quiet",
                                 "-CAfile", str(certs["server"][0]), "-verify_return_error"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            proc.stdin.write(b"hello from openssl\n")
            proc.stdin.flush()
            reply, deadline = b"", time.monotonic() + 20
            while b"\n" not in reply and time.monotonic() < deadline:
                if select.select([proc.stdout], [], [], 1)[0]:
                    chunk = proc.stdout.read1(4096)
                    if not chunk:
                        break
                    reply += chunk
            assert reply == b"HELLO FROM OPENSSL\n", proc.stderr.read1(4096) if proc.poll() is not None else reply
        finally:
            proc.kill()
            proc.wait(10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                stream.close()
        err = stopped(srv)
    assert "stopped: connections=1 requests=1 errors=0" in err, err[-3000:]


def test_plain_text_and_stalled_handshakes_cost_one_line_each(engine, certs):
    with running_server("--engine", engine, "--port", "0", "--request-timeout", "1", *tls_args(certs)) as srv:
        with srv.connect() as plain:  # speaks the line protocol to a TLS port
            plain.send(b"hello in plain text\n")
            try:
                assert plain.read_all() == b""  # closed, and told nothing in plain text
            except ConnectionResetError:
                pass  # closed with our bytes unread: the kernel resets
        with srv.connect() as silent:  # connects, never starts a handshake
            assert silent.read_all() == b""
        with srv.connect() as stalled:  # begins a ClientHello record, then stalls
            stalled.send(b"\x16\x03\x01\x02\x00\x01")
            assert stalled.read_all() == b""
        with srv.connect(tls=client_context(certs)) as good:  # and the server serves on
            assert good.request(b"still served\n") == b"STILL SERVED\n"
        err = stopped(srv)
    failures = [line for line in err.splitlines() if "TLS handshake failed" in line]
    assert len(failures) == 3, err[-3000:]
    assert sum("no handshake within 1s (--request-timeout)" in line for line in failures) == 2, failures
    assert "stopped: connections=4 requests=1 errors=3" in err, err[-3000:]


def test_client_certificates_required(engine, certs):
    with running_server("--engine", engine, "--port", "0", "--ca-certs", str(certs["client"][0]),
                        "--cert-reqs", "required", *tls_args(certs)) as srv:
        with srv.connect(tls=client_context(certs, with_cert=True)) as c:
            assert c.request(b"with a certificate\n") == b"WITH A CERTIFICATE\n"
        # refused: at connect, at the first write or at the first read (TLS 1.3 sends the
        # client's certificate, or its absence, after the client considers the handshake done)
        try:
            with srv.connect(tls=client_context(certs)) as refused:
                refused.send(b"without one\n")
                reply = refused.readline()
        except (ssl.SSLError, ConnectionError):
            reply = b""
        assert reply == b""
        err = stopped(srv)
    assert sum("TLS handshake failed" in line and "certificate" in line.lower() for line in err.splitlines()) == 1, \
        err[-3000:]
    assert "stopped: connections=2 requests=1 errors=1" in err, err[-3000:]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "multiserve", "serve", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_bad_tls_settings_are_one_line(certs, tmp_path):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    cert, key = map(str, certs["server"])
    cases = [
        (["--certfile", str(tmp_path / "missing.pem")], "no such file"),
        (["--certfile", str(not_pem)], "cannot load the certificate and key"),
        (["--certfile", cert, "--keyfile", str(certs["client"][1])], "cannot load the certificate and key"),
        (["--keyfile", key], "a keyfile needs a certfile"),
        (["--certfile", cert, "--keyfile", key, "--cert-reqs", "required"], "needs --ca-certs"),
        (["--certfile", cert, "--keyfile", key, "--cert-reqs", "sometimes"], "must be one of none, optional, required"),
        (["--certfile", cert, "--keyfile", key, "--ca-certs", str(not_pem), "--cert-reqs", "2"], "cannot load"),
    ]
    for args, fragment in cases:
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and fragment in proc.stderr, (args, proc.stderr)
        assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


def test_ready_line_and_print_config_say_tls(certs):
    proc = subprocess.Popen([sys.executable, "-m", "multiserve", "serve", "--port", "0", *tls_args(certs)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        line = proc.stdout.readline().decode()  # the pytest timeout bounds it
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()
    assert line.startswith("multiserve listening on 127.0.0.1:") and line.rstrip().endswith(" tls"), line
    shown = cli(*tls_args(certs), "--print-config").stdout
    assert f'certfile = "{certs["server"][0]}"  # flag' in shown and 'cert_reqs = "none"  # default' in shown
