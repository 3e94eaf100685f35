"""The one server-subprocess harness (multiserve.launch): ready line, port readiness, failures,
the clean stop and the kill of the whole process group. Real processes, 127.0.0.1 only."""
from __future__ import annotations

import os
import socket
import sys
import textwrap

import psutil
import pytest

from multiserve import launch

# A server that prints nothing: it listens on argv[1] and answers upper, exits 3 on SIGTERM.
SILENT_SERVER = textwrap.dedent("""
    import signal, socket, sys
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    while True:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while not data.endswith(b"\\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall(data.upper())
""")


@pytest.mark.timeout(60)
def test_ready_line_gives_host_and_port_and_sigterm_exits_0():
    with launch.ServerProcess([sys.executable, "-m", "multiserve", "serve", "--engine", "thread", "--port", "0"]) as srv:
        assert srv.host == "127.0.0.1" and srv.port > 0 and srv.alive()
        with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
            sock.sendall(b"hi\n")
            assert sock.recv(16) == b"HI\n"
        assert srv.terminate(20) == 0


@pytest.mark.timeout(60)
def test_a_silent_server_is_ready_when_its_port_accepts(tmp_path):
    script = tmp_path / "silent.py"
    script.write_text(SILENT_SERVER)
    port = launch.free_port()
    with launch.ServerProcess([sys.executable, str(script), str(port)], port=port) as srv:
        assert (srv.host, srv.port) == ("127.0.0.1", port)
        with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
            sock.sendall(b"abc\n")
            assert sock.recv(16) == b"ABC\n"
        assert srv.terminate(20) == 3  # its own exit code, reported as it is


@pytest.mark.timeout(60)
def test_exit_before_ready_says_the_code_and_the_last_stderr_line():
    with pytest.raises(launch.NotReady, match=r"exited 5 before ready: last words"):
        launch.ServerProcess([sys.executable, "-c", "import sys; print('last words', file=sys.stderr); sys.exit(5)"])


@pytest.mark.timeout(60)
def test_silence_is_not_ready_within_the_timeout_and_the_process_is_killed():
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    before = {p.pid for p in psutil.Process().children()}
    with pytest.raises(launch.NotReady, match=r"^printed no ready line within 0.5s$"):
        launch.ServerProcess(cmd, ready_timeout=0.5)
    left = {p.pid for p in psutil.Process().children() if p.status() != psutil.STATUS_ZOMBIE} - before
    assert not left


@pytest.mark.timeout(60)
def test_kill_ends_the_whole_process_group_children_included():
    # the server forks a child that ignores SIGTERM, then prints the ready line
    code = textwrap.dedent("""
        import os, signal, sys, time
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(60)
            os._exit(0)
        print("multiserve listening on 127.0.0.1:1 engine=test pid=%d" % os.getpid(), flush=True)
        time.sleep(60)
    """)
    with launch.ServerProcess([sys.executable, "-c", code]) as srv:
        children = psutil.Process(srv.pid).children()
        assert len(children) == 1
        child = children[0]
        assert os.getpgid(child.pid) == srv.pid  # its own group, led by the server
    child.wait(10)  # SIGKILLed with its group (SIGTERM alone would not have ended it)
    assert not child.is_running()


def test_free_port_is_bindable():
    port = launch.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.timeout(60)
def test_product_code_does_not_import_the_test_support():
    import subprocess

    code = ("import sys, multiserve.services.tickets.bench, multiserve.compare.cli, multiserve.compare.runner, "
            "multiserve.compare.idle, multiserve.cli; print(sorted(m for m in sys.modules if m.startswith('multiserve.testing')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
