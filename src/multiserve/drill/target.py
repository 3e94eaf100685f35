"""The server under drill: a multiserve engine started through the test harness's launcher, or
any command (``--server 'COMMAND {port}'``), each in its own session (process group) so that
``kill-server`` and the final clean-up reach every process it forked, by group id, never by name.

The launcher is imported here and nowhere else in the drill (it is moving into the package proper;
re-point this one import when it does).
"""
from __future__ import annotations

import collections
import contextlib
import os
import select
import shlex
import signal
import socket
import subprocess
import threading
import time

import psutil

from ..testing.server_process import READY, ServerProcess

# Lines of the server's output kept for the report when it fails (its log is drained all along:
# an unread pipe fills at 64 KiB and a server that logs each attacker it closes would block).
KEEP_LINES = 50
# How often a command without a ready line is probed for a listening port.
PROBE_INTERVAL = 0.05


class TargetError(RuntimeError):
    """The server could not be started or did not become ready (one line, no traceback)."""


class Target:
    """A running server: ``host``, ``port``, ``pid`` (its main process, which receives the
    signal events), ``label``; ``workers()``, ``signal(sig)``, ``kill_all()``, ``stop()``."""

    def __init__(self, proc: subprocess.Popen, host: str, port: int, pid: int, label: str):
        self.proc = proc
        self.host, self.port, self.pid, self.label = host, port, pid, label
        self.output: collections.deque[str] = collections.deque(maxlen=KEEP_LINES)
        self._drains = [threading.Thread(target=self._drain, args=(stream,), daemon=True)
                        for stream in (proc.stdout, proc.stderr) if stream is not None]
        for thread in self._drains:
            thread.start()

    def _drain(self, stream) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in iter(stream.readline, b""):
                self.output.append(line.decode(errors="replace").rstrip())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def workers(self) -> list[int]:
        """The main process's live children, oldest first (a hybrid server's workers, a process
        engine's connection handlers, gunicorn's workers)."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        alive = []
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.append((child.create_time(), child.pid))
        return [pid for _, pid in sorted(alive)]

    def connections_of(self, pid: int) -> int:
        """Established TCP connections of ``pid`` on the served port: what a kill can lose at
        most (times the pipeline depth)."""
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return 0
        return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port)

    def signal(self, sig: int, pid: int | None = None) -> None:
        os.kill(self.pid if pid is None else pid, sig)

    def kill_all(self) -> None:
        """SIGKILL to the whole process group (the server and everything it forked)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM (if still running), wait up to ``timeout``; returns the exit code (negative: the
        signal), None if it had to be killed. Always leaves no process of the group behind."""
        code = self.proc.poll()
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        self.kill_all()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        for thread in self._drains:
            thread.join(2)
        return code


def start_engine(serve_args: list[str], ready_timeout: float) -> Target:
    """``multiserve serve --port 0 SERVE_ARGS`` through the launcher; ready when it prints its
    ready line. Raises TargetError."""
    try:
        server = ServerProcess(["--host", "127.0.0.1", "--port", "0", *serve_args], ready_timeout=ready_timeout)
    except RuntimeError as exc:
        raise TargetError(_last_line(str(exc))) from None
    engine = serve_args[serve_args.index("--engine") + 1] if "--engine" in serve_args else "asyncio"
    return Target(server.proc, server.host, server.port, server.pid, f"engine {engine}")


def free_port() -> int:
    """A port free a moment ago (bound to 0, then released): the one way to give a command that
    takes ``{port}`` a port; a race with another process binding it is reported as not ready."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_command(command: str, ready_timeout: float) -> Target:
    """Any server: ``{port}`` in ``command`` is replaced by a free port and the server is ready
    once that port accepts a connection; without ``{port}``, the command must print multiserve's
    ready line (``multiserve serve --port 0``, ``python -m multiserve.compare.baselines NAME --port
    0``). Raises ValueError for a command that cannot be run, TargetError if it is not ready."""
    port = free_port() if "{port}" in command else None
    argv = shlex.split(command.replace("{port}", str(port)) if port else command)
    if not argv:
        raise ValueError("--server: empty command")
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise ValueError(f"--server: cannot run {argv[0]!r}: {exc.strerror}") from None
    deadline = time.monotonic() + ready_timeout
    try:
        if port is not None:
            host, pid = "127.0.0.1", proc.pid
            while not _accepts(host, port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise TargetError(_not_ready(proc, f"nothing accepted on port {port}"))
                time.sleep(PROBE_INTERVAL)
        else:
            host, port, pid = _ready_line(proc, deadline)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        raise
    return Target(proc, host, port, pid, argv[0] if len(argv) == 1 else " ".join(argv[:3]))


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _ready_line(proc: subprocess.Popen, deadline: float):
    buf = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            break
        buf += chunk
        match = READY.search(buf)
        if match:
            return match.group(1).decode(), int(match.group(2)), int(match.group(4))
    raise TargetError(_not_ready(proc, "no ready line ('multiserve listening on HOST:PORT ... pid=N'); put {port} in the command"))


def _not_ready(proc: subprocess.Popen, why: str) -> str:
    code = proc.poll()
    return f"server did not become ready: {why}" + ("" if code is None else f" (it exited with status {code})")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else text


__all__ = ["Target", "TargetError", "free_port", "start_command", "start_engine"]
