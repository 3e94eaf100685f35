"""A real multiserve server in a subprocess, for tests: built on the one harness, multiserve.launch."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time

import psutil

from .. import launch


class ServerProcess(launch.ServerProcess):
    """``multiserve serve ARGS...`` started by the one harness (:mod:`multiserve.launch`):
    ``host``, ``port``, ``proc``; ``stop()`` sends SIGTERM and waits.

    The process runs in its own session (process group), so ``kill()`` can also reach children
    that a process or hybrid engine forked, by the group's id, never by name. A server that
    does not become ready raises RuntimeError (with its stdout and stderr), as before.
    """

    def __init__(self, args, *, env=None, ready_timeout: float = 20.0, cwd=None, command=None, pass_fds=()):
        self.args = list(args)
        cmd = [*(command or [sys.executable, "-m", "multiserve"]), "serve", *self.args]
        try:
            super().__init__(cmd, ready_timeout=ready_timeout, env=env, cwd=cwd, pass_fds=pass_fds)
        except launch.NotReady as exc:
            raise RuntimeError(f"server {' '.join(self.args)} did not become ready: {exc}") from None

    def connect(self, timeout: float = 10.0, tls=None, address=None) -> "Client":
        """A client of this server (a unix socket's too); ``tls``: an ``ssl.SSLContext``;
        ``address``: one of ``self.addresses`` (a server on several), else the first."""
        host, port = address if address is not None else (self.host, self.port)
        return Client(host, port, timeout=timeout, tls=tls)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code. Kills the group (and raises
        subprocess.TimeoutExpired) if it does not exit in time."""
        code = self.terminate(timeout)
        if code is None:
            self.kill()
            raise subprocess.TimeoutExpired(self.command, timeout)
        return code


@contextlib.contextmanager
def running_server(*args, env=None, ready_timeout: float = 20.0, cwd=None, command=None, pass_fds=()):
    """``with running_server("--engine", "thread") as srv:`` ... always killed at the end.
    ``command`` replaces ``python -m multiserve`` (e.g. the console script); ``pass_fds``: the
    descriptors the server inherits (``--bind fd://N``, socket activation)."""
    with ServerProcess(args, env=env, ready_timeout=ready_timeout, cwd=cwd, command=command,
                       pass_fds=pass_fds) as server:
        yield server


class Client:
    """A blocking line client with a timeout on every call."""

    def __init__(self, host: str, port: int | None, timeout: float = 10.0, tls=None):
        """``port`` None: ``host`` is ``unix:PATH``. ``tls``: an ``ssl.SSLContext`` to wrap the
        connection in (handshake included, within ``timeout``)."""
        if port is None and host.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(host[len("unix:"):])
            except OSError:
                self.sock.close()
                raise
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=None if port is None else host)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def request(self, line: bytes) -> bytes:
        self.send(line)
        return self.readline()

    def read_all(self) -> bytes:
        """Everything until the server closes."""
        chunks = [self.buf]
        self.buf = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_for(predicate, timeout: float, what: str):
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def live_children(pid: int) -> set[int]:
    """The pids of the process's children that have not exited (zombies left out)."""
    alive = set()
    for child in psutil.Process(pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.add(child.pid)
        except psutil.NoSuchProcess:  # exited between the listing and the look
            pass
    return alive
