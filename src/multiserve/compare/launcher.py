"""Start an engine or a baseline as a subprocess, watch its CPU and memory, stop it with SIGTERM.

Engines run as ``python -m multiserve serve --engine E --service S --port 0`` and baselines as
``python -m multiserve.compare.baselines NAME --service S --port 0``; both print the same ready
line, so :class:`Server` starts either. Each server gets its own session (process group) so that
children a process engine forked are found by psutil and, at the end, killed by the group's id.
"""
from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil

READY = re.compile(rb"multiserve listening on (\S+):(\d+) engine=(\S+) pid=(\d+)")
# Seconds between two samples of the server's process tree: often enough to catch the peak RSS
# of a 1 s cell, rare enough that walking /proc stays well under 1% of a core.
SAMPLE_INTERVAL = 0.2
# A server has this long to print its ready line (a cold interpreter with gevent imported starts
# in ~0.3 s here; a loaded 2-core machine can be ten times slower).
READY_TIMEOUT = 20.0
# After SIGTERM the load has ended and every client has closed, so draining is immediate; give
# the graceful stop (``--grace``) room, then call the server hung.
STOP_TIMEOUT = 15.0
# Log only problems: a server logging per connection would spend the measured CPU on logging.
ENGINE_LOG_LEVEL = "warning"


def engine_command(engine: str, service: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "multiserve", "serve", "--engine", engine, "--service", service,
            "--host", "127.0.0.1", "--port", "0", "--log-level", ENGINE_LOG_LEVEL, *extra]


def baseline_command(name: str, service: str) -> list[str]:
    return [sys.executable, "-m", "multiserve.compare.baselines", name, "--service", service,
            "--host", "127.0.0.1", "--port", "0"]


class ServerFailed(Exception):
    """The server did not start, or did not stop cleanly; the message is one line for the report."""


class Server:
    """A started server. ``host``/``port`` come from its ready line.

    Use as a context manager: leaving it kills the whole process group whatever happened.
    ``stop()`` is the clean path (SIGTERM, wait, exit code 0 expected). stderr goes to a
    temporary file, never a pipe nobody reads (a chatty server would block on a full pipe).
    """

    def __init__(self, command: list[str], *, ready_timeout: float = READY_TIMEOUT):
        self.command = command
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr, start_new_session=True)
        self.host, self.port = self._wait_ready(ready_timeout)
        # Keep reading stdout so that a server printing after its ready line never blocks.
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    def _wait_ready(self, timeout: float):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        buf = b""
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            if m := READY.search(buf):
                return m.group(1).decode(), int(m.group(2))
        try:  # stdout closed: the process is exiting, give it a moment to say its exit code
            code = self.proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
        self.kill()
        if code is None:
            raise ServerFailed(f"no ready line within {timeout:.0f}s")
        raise ServerFailed(f"exited {code} before ready: {self.stderr_tail()}")

    def _drain_stdout(self):
        with contextlib.suppress(OSError, ValueError):
            while self.proc.stdout.read(65536):
                pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, lines: int = 1) -> str:
        """The last non-empty stderr lines, joined by `` | ``: the reason a report shows."""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail) or "(no output on stderr)"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM and wait. Raises ServerFailed unless the server exits 0 within ``timeout``."""
        code = self.proc.poll()
        if code is not None:
            raise ServerFailed(f"server died during the run (exit {code}): {self.stderr_tail()}")
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ServerFailed(f"still running {timeout:.0f}s after SIGTERM") from None
        if code != 0:
            raise ServerFailed(f"exit {code} after SIGTERM: {self.stderr_tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group (by its id, never by name), then reap."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        self.proc.stdout.close()
        self._stderr.close()


def _cpu_times(proc: psutil.Process):
    try:
        return proc.cpu_times()
    except psutil.Error:  # exited (or reaped) meanwhile
        return None


def _seconds(times) -> float:
    return 0.0 if times is None else times.user + times.system + times.children_user + times.children_system


def tree_cpu_seconds(root: psutil.Process, descendants) -> float:
    """User+system seconds of ``root``, of ``descendants()`` (its live descendants) and of the
    children each of them reaped (their ``children_*`` times).

    A child reaped between reading the root and listing its descendants would be lost (or
    counted twice the other way round): read the root's reaped-children total before and after
    the listing, and list again until it did not move.
    """
    for _ in range(100):
        before = _cpu_times(root)
        live = sum(_seconds(_cpu_times(proc)) for proc in descendants())
        after = _cpu_times(root)
        if before is None or after is None or (before.children_user, before.children_system) == (
                after.children_user, after.children_system):
            break
    return _seconds(after) + live


class TreeSampler:
    """Samples the CPU seconds and RSS of a process and all its descendants in a thread.

    ``cpu_seconds()`` counts user+system time of the live tree plus what exited children left
    in their parent's ``children_*`` times (reaped children, e.g. a forking server's past
    clients). ``peak_rss`` is the largest sum of RSS seen; summed RSS counts pages that forked
    children share copy-on-write once per process, so for forking servers it is an upper bound.
    """

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self._known: dict[int, psutil.Process] = {pid: self.root}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tree(self) -> list[psutil.Process]:
        try:
            children = self.root.children(recursive=True)
        except psutil.Error:
            return []
        # Reuse Process objects so psutil's pid-reuse checks and cpu caches stay valid.
        for child in children:
            self._known.setdefault(child.pid, child)
        return [self.root] + [self._known[c.pid] for c in children]

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.root, lambda: self.tree()[1:])

    def rss(self) -> int:
        total = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def sample(self) -> int:
        rss = self.rss()
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> "TreeSampler":
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
