"""The server under drill: a multiserve engine started through the test harness's launcher, or
any command (``--server 'COMMAND {port}'``), each in its own session (process group) so that
``kill-server`` and the final clean-up reach every process it forked, by group id, never by name.

Servers start, become ready and end through the one harness, :mod:`multiserve.launch`.
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import sys

import psutil

from ..launch import NotReady, ServerProcess, free_port

# Lines of the server's log kept for the report when it fails.
KEEP_LINES = 50
# A retiring hybrid worker's summary line (engines/hybrid_engine.py): what the server says it
# moved and closed, beside what the clients saw.
HANDOFF_LINE = re.compile(r"worker \d+ handed off (\d+) connections .*?, closed (\d+)")
TLS_CLOSE_LINE = re.compile(r"worker \d+ closed (\d+) connections on stop \(TLS")


def handoff_counts(log_text: str) -> dict | None:
    """``{"workers", "moved", "closed"}`` summed over the retiring workers' hand-off lines of a
    hybrid server's log; None when there is none (another engine, or no retirement)."""
    found = [tuple(map(int, m.groups())) for m in HANDOFF_LINE.finditer(log_text)]
    tls = [int(m.group(1)) for m in TLS_CLOSE_LINE.finditer(log_text)]
    if not found and not tls:
        return None
    return {"workers": len(found) + len(tls), "moved": sum(m for m, _ in found),
            "closed": sum(c for _, c in found) + sum(tls)}


class TargetError(RuntimeError):
    """The server could not be started or did not become ready (one line, no traceback)."""


class Target:
    """A running server: ``host``, ``port``, ``pid`` (its main process, which receives the
    signal events), ``label``; ``workers()``, ``signal(sig)``, ``kill_all()``, ``stop()``;
    ``output``, its last log lines (stderr: the harness keeps it in a file, so a server that logs
    each attacker it closes never blocks on a pipe)."""

    def __init__(self, server: ServerProcess, pid: int, label: str):
        self.server = server
        self.proc = server.proc
        self.host, self.port, self.pid, self.label = server.host, server.port, pid, label
        self._output: list[str] | None = None
        self.handoffs: dict | None = None  # read from its log once stopped

    @property
    def output(self) -> list[str]:
        if self._output is not None:
            return self._output
        return self.server.stderr_text().splitlines()[-KEEP_LINES:]

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
        code = self.server.terminate(timeout)
        text = self.server.stderr_text()
        self._output = text.splitlines()[-KEEP_LINES:]
        self.handoffs = handoff_counts(text)
        self.server.close()  # SIGKILL to the group: whatever it forked goes too
        return code


def start_engine(serve_args: list[str], ready_timeout: float) -> Target:
    """``multiserve serve --port 0 SERVE_ARGS``; ready when it prints its ready line.
    Raises TargetError."""
    command = [sys.executable, "-m", "multiserve", "serve", "--host", "127.0.0.1", "--port", "0", *serve_args]
    try:
        server = ServerProcess(command, ready_timeout=ready_timeout)
    except NotReady as exc:
        raise TargetError(f"server did not become ready: {exc}") from None
    engine = serve_args[serve_args.index("--engine") + 1] if "--engine" in serve_args else "asyncio"
    return Target(server, server.pid, f"engine {engine}")


def start_command(command: str, ready_timeout: float) -> Target:
    """Any server: ``{port}`` in ``command`` is replaced by a free port and the server is ready
    once that port accepts a connection; without ``{port}``, the command must print multiserve's
    ready line (``multiserve serve --port 0``, ``python -m multiserve.compare.baselines NAME --port
    0``), whose pid is the process the events go to. Raises ValueError for a command that cannot
    be run, TargetError if it is not ready."""
    port = free_port() if "{port}" in command else None
    argv = shlex.split(command.replace("{port}", str(port)) if port else command)
    if not argv:
        raise ValueError("--server: empty command")
    try:
        server = ServerProcess(argv, ready_timeout=ready_timeout, port=port)
    except OSError as exc:
        raise ValueError(f"--server: cannot run {argv[0]!r}: {exc.strerror}") from None
    except NotReady as exc:
        hint = "" if port else "; without {port} in the command, it must print multiserve's ready line"
        raise TargetError(f"server did not become ready: {exc}{hint}") from None
    ready_pid = re.search(rb"pid=(\d+)", server.stdout_seen)
    pid = int(ready_pid.group(1)) if ready_pid else server.pid
    return Target(server, pid, argv[0] if len(argv) == 1 else " ".join(argv[:3]))


__all__ = ["Target", "TargetError", "free_port", "start_command", "start_engine"]
