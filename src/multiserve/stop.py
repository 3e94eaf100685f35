"""The one "stop serving" of a serving process, and the only place SIGTERM/SIGINT are handled.

The serve entry (``multiserve serve``, ``multiserve.serve``) makes a :class:`Stop`, installs
:func:`stop_on_signals` (the handlers only record the signal and set the stop, as gunicorn's
arbiter does), and passes the stop to ``Engine.serve``. An engine waits on it the way its
concurrency model waits on anything:

* a poll/epoll loop watches ``fileno()``: it becomes readable when the stop is set, and also on
  any signal (it is the process's ``signal.set_wakeup_fd``), so a loop asleep in C wakes and
  lets Python run the handler; the reader calls ``drain()``, then looks at ``is_set()``;
* a thread calls ``wait(timeout)``;
* an event loop registers ``add_callback(fn)`` (run by ``set``, on the thread that set it: for a
  signal, the main thread between two bytecodes, so ``fn`` must only schedule work, e.g.
  ``loop.call_soon_threadsafe``).

A test or an embedder that runs an engine in-process simply calls ``stop.set()`` from any thread.
A forked child that serves (the process engine's connection, a hybrid worker) makes its own Stop
and installs the handlers again: the parent's pipe is not its own.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stop:
    """Set once; ``reason`` says by what ("SIGTERM", or what the caller of ``set`` passed)."""

    def __init__(self):
        self._flag = threading.Event()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._callbacks: list = []
        self.reason: str | None = None

    def set(self, reason: str = "stop requested") -> None:
        if self._flag.is_set():
            return
        self.reason = reason
        self._flag.set()
        self.wake()
        for callback in list(self._callbacks):
            callback()

    def is_set(self) -> bool:
        return self._flag.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._flag.wait(timeout)

    def add_callback(self, callback) -> None:
        """Run ``callback()`` when the stop is set (at once if it already is)."""
        self._callbacks.append(callback)
        if self._flag.is_set():
            callback()

    def fileno(self) -> int:
        return self._read_fd

    @property
    def wakeup_fd(self) -> int:
        """The write end: what ``signal.set_wakeup_fd`` is given."""
        return self._write_fd

    def wake(self) -> None:
        """Make ``fileno()`` readable (from any thread)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"\0")

    def drain(self) -> None:
        """Empty the pipe after a wake-up; call ``is_set()`` after this, not before."""
        drain_pipe(self._read_fd)
        if self._flag.is_set():
            self.wake()  # stays readable for whoever else looks once it is set

    def close(self) -> None:
        """Close the pipe. A wake after this writes nowhere: the numbers are forgotten, since
        the kernel hands them to the next open (a forked child closes its parent's stop, then
        opens its access log; a SIGTERM reaching the parent's handler restored there once wrote a
        NUL byte into that log)."""
        fds, self._read_fd, self._write_fd = (self._read_fd, self._write_fd), -1, -1
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def drain_pipe(fd: int) -> None:
    """Read a non-blocking self-pipe empty (the wake-ups it carried are all seen now)."""
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 4096):
            pass


@contextlib.contextmanager
def stop_on_signals(stop: Stop, signals=STOP_SIGNALS):
    """While inside: each of ``signals`` sets ``stop`` (with the signal's name as the reason)
    and every signal wakes ``stop.fileno()``. Restores the previous handlers on exit. Only on
    the main thread (Python's rule for signal handlers); elsewhere it installs nothing, and the
    caller stops the server by calling ``stop.set()``."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def record(signum, frame):
        stop.set(signal.Signals(signum).name)

    old_wakeup = signal.set_wakeup_fd(stop.wakeup_fd, warn_on_full_buffer=False)
    old = {signum: signal.signal(signum, record) for signum in signals}
    try:
        yield stop
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(old_wakeup)
