"""Start an engine, a baseline or a user's ``--server`` command, watch its CPU and memory, stop it.

Built on the one server-subprocess harness (:mod:`multiserve.launch`). Engines run as
``python -m multiserve serve --engine E --service S --port 0 --backlog B`` and baselines as
``python -m multiserve.compare.baselines NAME --service S --port 0 --backlog B``; both print the
ready line. A ``--server`` command is the user's own: ``{port}`` becomes a free port (then the
server is ready when that port accepts, or when it prints the ready line), ``{service}`` the
service spec and ``{backlog}`` the run's backlog.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import sys
import threading

import psutil

from .. import launch
from .baselines import DEFAULT_BACKLOG
from .window import CpuReading, timed

# Seconds between two samples of the server's process tree: often enough to catch the peak RSS
# of a 1 s cell, rare enough that walking /proc stays well under 1% of a core.
SAMPLE_INTERVAL = 0.2
READY_TIMEOUT = launch.READY_TIMEOUT
# After SIGTERM the load has ended and every client has closed, so draining is immediate; give
# the graceful stop (``--grace``) room, then call the server hung.
STOP_TIMEOUT = 15.0
# Log only problems: a server logging per connection would spend the measured CPU on logging.
ENGINE_LOG_LEVEL = "warning"
# The listen backlog every server of a run gets (engines, baselines, and ``{backlog}`` in a
# ``--server`` command): the engines' own default (config.py). socketserver's default of 5 made
# 256 connecting clients wait for 1 s SYN retransmits, so the baselines measured their backlog.
BACKLOG = DEFAULT_BACKLOG


def engine_command(engine: str, service: str, *extra: str, backlog: int = BACKLOG, python: str = "") -> list[str]:
    """``python`` (default: this interpreter) runs the server: compare --python (issue 13)."""
    return [python or sys.executable, "-m", "multiserve", "serve", "--engine", engine, "--service", service,
            "--host", "127.0.0.1", "--port", "0", "--backlog", str(backlog), "--log-level", ENGINE_LOG_LEVEL,
            *extra]


def http_engine_command(engine: str, app: str, interface: str, backlog: int = BACKLOG, python: str = "") -> list[str]:
    return [python or sys.executable, "-m", "multiserve", "serve", "--engine", engine, "--protocol", "http",
            "--app", app, "--interface", interface, "--host", "127.0.0.1", "--port", "0", "--backlog", str(backlog),
            "--log-level", ENGINE_LOG_LEVEL]


def baseline_command(name: str, service: str, backlog: int = BACKLOG, python: str = "") -> list[str]:
    return [python or sys.executable, "-m", "multiserve.compare.baselines", name, "--service", service,
            "--host", "127.0.0.1", "--port", "0", "--backlog", str(backlog)]


def server_command(template: str, service: str, port: int, backlog: int = BACKLOG, app: str = "") -> list[str]:
    """A ``--server`` COMMAND as argv: split as a shell would (no shell runs, so SIGTERM reaches
    the server itself), then ``{port}``, ``{service}``, ``{backlog}`` and (HTTP) ``{app}``
    replaced in each word."""
    values = {"{port}": str(port), "{service}": service, "{backlog}": str(backlog), "{app}": app}
    argv = []
    for word in shlex.split(template):
        for key, value in values.items():
            word = word.replace(key, value)
        argv.append(word)
    return argv


class ServerFailed(Exception):
    """The server did not start, or did not stop cleanly; the message is one line for the report."""


class Server(launch.ServerProcess):
    """A started server. ``host``/``port`` come from its ready line (or ``port`` accepting).

    Use as a context manager: leaving it kills the whole process group whatever happened.
    ``stop()`` is the clean path (SIGTERM, wait, the exit code).
    """

    def __init__(self, command: list[str], *, ready_timeout: float = READY_TIMEOUT, port: int | None = None,
                 env: dict | None = None):
        try:
            super().__init__(command, ready_timeout=ready_timeout, port=port, env=env)
        except launch.NotReady as exc:
            raise ServerFailed(str(exc)) from None

    def stop(self, timeout: float = STOP_TIMEOUT, *, strict: bool = True) -> int:
        """SIGTERM and wait; the exit code. Raises ServerFailed if the server died during the
        run, is still running after ``timeout``, or (``strict``) exits non-zero."""
        code = self.proc.poll()
        if code is not None:
            raise ServerFailed(f"server died during the run (exit {code}): {self.stderr_tail()}")
        code = self.terminate(timeout)
        if code is None:
            raise ServerFailed(f"still running {timeout:.0f}s after SIGTERM")
        if code != 0 and strict:
            raise ServerFailed(f"exit {code} after SIGTERM: {self.stderr_tail()}")
        return code


def _cpu_times(proc: psutil.Process):
    try:
        return proc.cpu_times()
    except psutil.Error:  # exited (or reaped) meanwhile
        return None


def _scheduled_seconds(pid: int) -> float:
    """CPU seconds the kernel's scheduler ran ``pid``'s live threads (``/proc/PID/task/*/schedstat``,
    first field, ns), 0.0 if unreadable. Precise, unlike ``/proc/PID/stat``'s utime+stime, which
    are sampled at the timer tick: a process that runs 2 ms a second between ticks is charged
    nothing there (ForkingTCPServer's 256 children under sleep:10: 0.0 s, measured here)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass  # exited meanwhile, or no schedstat in this kernel: the tick-based figure stands
    return total / 1e9


def _seconds(times, pid: int | None = None) -> float:
    """The process's own CPU (the larger of the tick-sampled utime+stime, which also holds its
    exited threads, and the scheduler's figure for its live threads: each is a lower bound)
    plus what its reaped children left (``children_*``)."""
    if times is None:
        return 0.0
    own = times.user + times.system
    if pid is not None:
        own = max(own, _scheduled_seconds(pid))
    return own + times.children_user + times.children_system


def tree_cpu_seconds(root: psutil.Process, descendants) -> float:
    """User+system seconds of ``root``, of ``descendants()`` (its live descendants) and of the
    children each of them reaped (their ``children_*`` times).

    A child reaped between reading the root and listing its descendants would be lost (or
    counted twice the other way round): read the root's reaped-children total before and after
    the listing, and list again until it did not move.
    """
    for _ in range(100):
        before = _cpu_times(root)
        live = sum(_seconds(_cpu_times(proc), proc.pid) for proc in descendants())
        after = _cpu_times(root)
        if before is None or after is None or (before.children_user, before.children_system) == (
                after.children_user, after.children_system):
            break
    return _seconds(after, root.pid) + live


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
        self._listed: list[psutil.Process] = [self.root]  # the tree as tree() last found it
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
        self._listed = [self.root] + [self._known[c.pid] for c in children]
        return self._listed

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.root, lambda: self.tree()[1:])

    def cpu_reading(self) -> CpuReading:
        """``cpu_seconds()`` of the tree as last listed (by ``tree()``: each sample lists it),
        with the times it was read between (:mod:`.window`). Not listed anew: walking /proc for
        the descendants is most of a reading (5.6 of 6.7 ms here, psutil reads every process's
        stat, and far more on a loaded machine), and the shorter the reading, the tighter it
        brackets a window's boundary. A process started since the last listing is missed by
        this reading only (the next sample lists it); a measured window runs on connections
        primed before it, so the tree is complete by then."""
        descendants = self._listed[1:]
        return timed(lambda: tree_cpu_seconds(self.root, lambda: descendants))

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
