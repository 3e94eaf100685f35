"""``--bind`` repeated (issue 15 item 2): one server, the same service on every address, on every
engine. Real servers (the CLI in a subprocess), real clients over 127.0.0.1, ::1 and unix
sockets, real signals; the counts checked against what the clients sent."""
from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading

import pytest

import multiserve
from multiserve.engines import ENGINES
from multiserve.launch import ready_addresses
from multiserve.stop import Stop
from multiserve.testing.server_process import running_server, wait_for

pytestmark = pytest.mark.timeout(90)
ENGINE_NAMES = list(ENGINES)
# the engines that run several processes or loops: two of them, so the listeners are shared
SEVERAL = ("--workers", "2")
WSGI_APP = "multiserve.testing.wsgi_apps:app"


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = ipv6_loopback()


@pytest.fixture(params=ENGINE_NAMES)
def engine(request):
    return request.param


@pytest.fixture
def unix_path(request):
    """A unix socket path (sun_path holds 108 bytes: pytest's tmp_path can be longer); the test
    checks the server removed it, and it is removed here anyway."""
    name = request.node.name.translate(str.maketrans("[]/", "---"))[-40:]
    path = f"/tmp/ms-{os.getpid()}-{name}.sock"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    yield path
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def stop_clean(srv) -> str:
    code = srv.stop(30)
    err = srv.stderr_text()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return err


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "multiserve", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def raw_connect(address, timeout=10.0) -> socket.socket:
    host, port = address
    if port is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(host.removeprefix("unix:"))
        return sock
    return socket.create_connection((host, port), timeout=timeout)


# -- every engine, every kind of address -----------------------------------------------------------

def test_every_engine_serves_the_line_protocol_on_every_bind(engine, unix_path):
    binds = ["127.0.0.1:0", f"unix:{unix_path}"] + (["[::1]:0"] if HAS_IPV6 else [])
    args = [a for b in binds for a in ("--bind", b)]
    with running_server("--engine", engine, *args, *SEVERAL) as srv:
        kinds = [(h.startswith("unix:"), ":" in h and p is not None) for h, p in srv.addresses]
        assert srv.addresses[0] == (srv.host, srv.port) and srv.host == "127.0.0.1" and srv.port
        assert srv.addresses[1] == (f"unix:{unix_path}", None)
        assert kinds[2:] == ([(False, True)] if HAS_IPV6 else []), srv.addresses
        assert os.path.exists(unix_path)
        for index, address in enumerate(srv.addresses):  # two clients each, open at the same time
            with srv.connect(address=address) as a, srv.connect(address=address) as b:
                assert a.request(b"first %d\n" % index) == b"FIRST %d\n" % index
                b.send(b"one\ntwo\n")
                assert (b.readline(), b.readline()) == (b"ONE\n", b"TWO\n")
        err = stop_clean(srv)
    n = len(srv.addresses)
    assert f"stopped: connections={2 * n} requests={3 * n} errors=0" in err, err[-2000:]
    assert not os.path.exists(unix_path), "the unix socket file outlived the server"


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback on this machine: the engine test above "
                                         "served 127.0.0.1 and unix only")
def test_ipv6_loopback_is_among_the_addresses_served():
    with running_server("--engine", "asyncio", "--bind", "[::1]:0", "--bind", "127.0.0.1:0") as srv:
        assert srv.host == "::1" and srv.addresses[1][0] == "127.0.0.1"
        for address in srv.addresses:
            with srv.connect(address=address) as c:
                assert c.request(b"six\n") == b"SIX\n"
        err = stop_clean(srv)
    assert "stopped: connections=2 requests=2 errors=0" in err


def test_every_engine_serves_http_on_every_bind(engine, unix_path):
    with running_server("--engine", engine, "--protocol", "http", "--app", WSGI_APP, "--interface", "wsgi",
                        "--bind", f"unix:{unix_path}", "--bind", "127.0.0.1:0", *SEVERAL) as srv:
        assert [p is None for _, p in srv.addresses] == [True, False]
        for address in srv.addresses:
            with raw_connect(address) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nhello"), reply
        err = stop_clean(srv)
    assert "stopped: connections=2 requests=2 errors=0" in err, err[-2000:]
    assert not os.path.exists(unix_path)


def test_max_conns_is_one_limit_across_listeners(engine, unix_path):
    with running_server("--engine", engine, "--max-conns", "1", "--bind", "127.0.0.1:0",
                        "--bind", f"unix:{unix_path}") as srv:
        tcp, unix = srv.addresses
        first = srv.connect(address=tcp)
        assert first.request(b"first\n") == b"FIRST\n"
        second = srv.connect(address=unix)  # the kernel accepts it; the server must not serve it yet
        second.send(b"second\n")
        readable, _, _ = select.select([second.sock], [], [], 0.5)
        assert readable == [], "a client on the other listener was served past --max-conns 1"
        first.close()
        assert second.readline() == b"SECOND\n"
        third = srv.connect(address=tcp)  # and now the TCP one waits for the unix one
        third.send(b"third\n")
        readable, _, _ = select.select([third.sock], [], [], 0.5)
        assert readable == [], "a client was served past --max-conns 1"
        second.close()
        assert third.readline() == b"THIRD\n"
        third.close()
        err = stop_clean(srv)
    assert "stopped: connections=3 requests=3 errors=0" in err, err[-2000:]


# -- failures -------------------------------------------------------------------------------------

def test_a_second_bind_that_fails_closes_the_first_and_is_one_line(unix_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        proc = cli("serve", "--bind", f"unix:{unix_path}", "--bind", f"127.0.0.1:{port}")
    finally:
        taken.close()
    assert proc.returncode != 0 and proc.stdout == "", (proc.returncode, proc.stdout)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "Address already in use" in lines[0], lines
    assert not os.path.exists(unix_path), "the first address's socket file was left behind"


def test_reuse_port_refuses_a_unix_address_among_several(unix_path):
    proc = cli("serve", "--engine", "hybrid", "--reuse-port", "--bind", "127.0.0.1:0", "--bind", f"unix:{unix_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--reuse-port" in lines[0] and f"unix:{unix_path}" in lines[0], proc.stderr
    assert not os.path.exists(unix_path)


# -- hybrid: shared sockets and --reuse-port --------------------------------------------------------

@pytest.mark.parametrize("reuse_port", [False, True], ids=["shared", "reuse-port"])
def test_hybrid_two_workers_serve_two_tcp_addresses(reuse_port):
    extra = ["--reuse-port"] if reuse_port else []
    with running_server("--engine", "hybrid", "--workers", "2", "--cpu-workers", "0", *extra,
                        "--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0") as srv:
        assert len(srv.addresses) == 2 and srv.addresses[0] != srv.addresses[1]
        clients = [srv.connect(address=a) for a in srv.addresses for _ in range(4)]  # open together
        try:
            for i, c in enumerate(clients):
                assert c.request(b"c%d\n" % i) == b"C%d\n" % i
        finally:
            for c in clients:
                c.close()
        err = stop_clean(srv)
    assert "stopped: connections=8 requests=8 errors=0" in err, err[-2000:]
    workers = {line.split("worker ")[1].split()[0] for line in err.splitlines() if " accepts (" in line}
    assert len(workers) >= 2, err[-2000:]


# -- the drain: what the kernel queued on every listener is served -----------------------------------

@pytest.mark.parametrize("loop_engine", ["asyncio", "multiloop"])
def test_stop_serves_what_every_listener_queued(loop_engine, unix_path):
    """SIGSTOP the server, queue a client (request sent) on each listener, then SIGTERM and
    SIGCONT: the loop wakes to the stop and the listeners at once; whether it reads the
    listeners first or drains first, every queued client gets its reply (the drain accepts each
    listener's backlog before closing it)."""
    with running_server("--engine", loop_engine, "--workers", "2", "--bind", "127.0.0.1:0",
                        "--bind", f"unix:{unix_path}") as srv:
        os.kill(srv.pid, signal.SIGSTOP)
        try:
            queued = [raw_connect(a) for a in srv.addresses for _ in range(2)]
            for i, sock in enumerate(queued):
                sock.sendall(b"queued %d\n" % i)
            os.kill(srv.pid, signal.SIGTERM)
        finally:
            os.kill(srv.pid, signal.SIGCONT)
        for i, sock in enumerate(queued):
            with sock:
                reply = b""
                while chunk := sock.recv(100):
                    reply += chunk
                assert reply == b"QUEUED %d\n" % i, (i, reply)
        assert srv.proc.wait(30) == 0
        err = srv.stderr_text()
    assert "stopped: connections=4 requests=4 errors=0" in err, err[-2000:]
    assert not os.path.exists(unix_path)


# -- systemd socket activation with two sockets ------------------------------------------------------

# What systemd does before it execs a socket-activated service with two ListenStream= lines: the
# sockets at descriptors 3 and 4, LISTEN_PID naming the process (the same pid after the exec).
ACTIVATE_TWO = [sys.executable, "-c", """
import fcntl, os, sys
# copies at 10 and above first, so that placing them at 3 and 4 clobbers none of them
fds = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in os.environ.pop("MS_FDS").split(",")]
for target, fd in enumerate(fds, start=3):
    os.dup2(fd, target)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)))
os.execv(sys.executable, [sys.executable, "-m", "multiserve", *sys.argv[1:]])
"""]


def listening_pair(unix_path: str, backlog: int) -> tuple[socket.socket, socket.socket]:
    """A listening TCP socket on 127.0.0.1 (a free port) and a listening unix socket, made here
    as systemd (or a test's own LoopServer) would hand them over."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(backlog)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(unix_path)
    unix.listen(backlog)
    return tcp, unix


@pytest.mark.parametrize("activated", ["threadpool", "asyncio", "hybrid"])
def test_systemd_socket_activation_with_two_sockets(activated, unix_path):
    tcp, unix = listening_pair(unix_path, 128)
    port = tcp.getsockname()[1]
    env = {**os.environ, "MS_FDS": f"{tcp.fileno()},{unix.fileno()}"}
    try:
        # --port 1 could not be bound (not root): the passed sockets are served instead
        with running_server("--engine", activated, "--port", "1", *SEVERAL, command=ACTIVATE_TWO, env=env,
                            pass_fds=(tcp.fileno(), unix.fileno())) as srv:
            assert srv.addresses == [("127.0.0.1", port), (f"unix:{unix_path}", None)]
            for address in srv.addresses:
                with srv.connect(address=address) as c:
                    assert c.request(b"activated\n") == b"ACTIVATED\n"
            err = stop_clean(srv)
    finally:
        tcp.close()
        unix.close()
    assert f"socket activation: serving 127.0.0.1:{port}, unix:{unix_path} (fd 3, 4)" in err, err[-2000:]
    assert "stopped: connections=2 requests=2 errors=0" in err, err[-2000:]


# -- the config file, the embedded API, the ready line ----------------------------------------------

def test_a_bind_list_in_the_config_file(tmp_path, unix_path):
    config = tmp_path / "multiserve.toml"
    config.write_text(f'engine = "thread"\nbind = ["127.0.0.1:0", "unix:{unix_path}"]\n')
    printed = cli("serve", "--config", str(config), "--print-config")
    assert printed.returncode == 0, printed.stderr
    assert f'bind = ["127.0.0.1:0", "unix:{unix_path}"]  # file' in printed.stdout.splitlines()
    with running_server("--config", str(config)) as srv:
        assert [p is None for _, p in srv.addresses] == [False, True]
        for address in srv.addresses:
            with srv.connect(address=address) as c:
                assert c.request(b"from the file\n") == b"FROM THE FILE\n"
        err = stop_clean(srv)
    assert "stopped: connections=2 requests=2 errors=0" in err
    assert not os.path.exists(unix_path)


def test_embedded_on_ready_is_given_the_first_address(unix_path):
    stop, seen, replies = Stop(), [], []

    def on_ready(host, port):
        seen.append((host, port))

    def client():
        try:
            wait_for(lambda: seen, 20, "the server to be ready")
            with raw_connect((f"unix:{unix_path}", None)) as a, raw_connect(seen[0]) as b:
                for sock in (a, b):
                    sock.sendall(b"embedded\n")
                    replies.append(sock.recv(100))
        finally:
            stop.set()

    thread = threading.Thread(target=client)
    thread.start()
    try:
        stats = multiserve.serve("upper", engine="asyncio", bind=["127.0.0.1:0", f"unix:{unix_path}"],
                                 on_ready=on_ready, stop=stop, grace=5)
    finally:
        thread.join(30)
        stop.close()
    assert seen[0][0] == "127.0.0.1" and seen[0][1] > 0, seen
    assert replies == [b"EMBEDDED\n", b"EMBEDDED\n"]
    assert stats.as_tuple() == (2, 2, 0)
    assert not os.path.exists(unix_path)


def test_the_ready_line_names_the_others_after_the_pid():
    line = (b"multiserve listening on 127.0.0.1:8080 engine=asyncio pid=42 "
            b"also=unix:/run/x.sock,[::1]:8081 python=3.13.5 gil=on tls\n")
    assert ready_addresses(line) == [("127.0.0.1", 8080), ("unix:/run/x.sock", None), ("::1", 8081)]
    assert ready_addresses(b"multiserve listening on unix:/run/x.sock engine=thread pid=7 python=3.12.1 gil=on\n") \
        == [("unix:/run/x.sock", None)]


def test_loop_server_drain_accepts_the_backlog_of_every_listener(unix_path):
    """The drain's own accept, isolated: clients wait (request sent) in both listeners' backlogs,
    and the LoopServer is stopped before its loop ever reads a listener: only the drain can
    accept them, and it must take every listener's, not the first one's."""
    import asyncio

    from multiserve.config import make_config
    from multiserve.engines.asyncio_engine import LoopServer
    from multiserve.protocol import protocol_factory
    from multiserve.services import load_service
    from multiserve.session import SessionFactory

    config = make_config(engine="asyncio", grace=5)
    sessions = SessionFactory(load_service("upper", {}), protocol_factory("line", config))
    tcp, unix = listening_pair(unix_path, 16)
    clients = [raw_connect(address) for address in
               [tcp.getsockname(), tcp.getsockname(), (f"unix:{unix_path}", None), (f"unix:{unix_path}", None)]]

    async def stopped_at_once():
        stop = asyncio.Event()
        stop.set()
        return await LoopServer([tcp, unix], sessions, config).serve(stop)

    try:
        for i, sock in enumerate(clients):
            sock.sendall(b"queued %d\n" % i)
        stats = asyncio.run(stopped_at_once())
        for i, sock in enumerate(clients):
            reply = b""
            while chunk := sock.recv(100):
                reply += chunk
            assert reply == b"QUEUED %d\n" % i, (i, reply)
    finally:
        for sock in (*clients, tcp, unix):
            sock.close()
    assert stats.as_tuple() == (4, 4, 0)
