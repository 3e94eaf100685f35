"""Accepting connections: the error handling every engine shares, and the poll loop of the
engines that accept on the main thread (thread, threadpool, process).

accept() errors that mean "no file descriptors or kernel memory right now" (EMFILE, ENFILE,
ENOMEM, ENOBUFS, as trio handles them) are not fatal: the engine stops accepting for
``ACCEPT_BACKOFF_SECONDS`` while its open connections go on (and close, freeing descriptors),
then tries again. :class:`AcceptErrorLog` keeps that from flooding the log.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time

from ..stop import drain_pipe

log = logging.getLogger(__name__)

OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
# 100 ms: long enough for connections to close and free descriptors, short against a client's
# connect timeout; gunicorn's and trio's accept loops pause on the same order (trio: 100 ms).
ACCEPT_BACKOFF_SECONDS = 0.1
# A burst of accepts per wake-up, bounded so that a connection flood cannot starve the rest of
# the loop (signals, timeouts, other connections).
ACCEPT_BURST = 64
# After the first out-of-descriptors episode is logged, at most one summary line this often.
SUMMARY_SECONDS = 10.0


class AcceptErrorLog:
    """Logs the first out-of-resources episode (its start and its end), then at most one summary
    line per SUMMARY_SECONDS: how many more episodes, and how many accepts were put off."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.in_episode = False
        self.first_done = False
        self.deferred = 0  # accepts put off since the last line
        self.episodes = 0  # episodes begun since the last line
        self.next_summary = 0.0

    def failed(self, exc: OSError) -> bool:
        """True if ``exc`` is an out-of-resources error the caller should back off from."""
        if exc.errno not in OUT_OF_RESOURCES:
            return False
        self.deferred += 1
        if not self.in_episode:
            self.in_episode = True
            self.episodes += 1
            if not self.first_done and self.episodes == 1 and self.deferred == 1:
                log.warning("accept failed: %s; backing off %.1fs at a time, serving open connections "
                            "(further episodes: one summary line per %.0fs)",
                            exc.strerror, ACCEPT_BACKOFF_SECONDS, SUMMARY_SECONDS)
        self._summarize()
        return True

    def succeeded(self) -> None:
        if not self.in_episode:
            return
        self.in_episode = False
        if not self.first_done:
            self.first_done = True
            log.info("accept works again (%d accepts were put off)", self.deferred)
            self.deferred = self.episodes = 0
            self.next_summary = self.clock() + SUMMARY_SECONDS
        else:
            self._summarize()

    def _summarize(self) -> None:
        if self.first_done and self.episodes and self.clock() >= self.next_summary:
            log.warning("accept ran out of descriptors %d more times (%d accepts put off) in the last %.0fs",
                        self.episodes, self.deferred, SUMMARY_SECONDS)
            self.deferred = self.episodes = 0
            self.next_summary = self.clock() + SUMMARY_SECONDS


def accept_some(listener, start, errors: AcceptErrorLog, *, room=None, limit: int = ACCEPT_BURST) -> bool:
    """Accept up to ``limit`` waiting connections from a non-blocking ``listener``, calling
    ``start(sock, peer)`` for each (it must not block). ``room()`` returning False stops early
    (``--max-conns``). Returns False when the caller should back off ACCEPT_BACKOFF_SECONDS
    (out of descriptors); other accept errors raise."""
    for _ in range(limit):
        if room is not None and not room():
            return True
        try:
            sock, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return True
        except ConnectionAbortedError:
            continue
        except OSError as exc:
            if errors.failed(exc):
                return False
            raise
        errors.succeeded()
        start(sock, peer)
    return True


class Acceptor:
    """The accept loop of the thread, threadpool and process engines, run on the main thread.

    It waits in ``poll`` on every listener, on the stop's pipe (which signals also wake) and on a
    pipe of its own that finished connections write to. Past ``max_conns`` open connections (from
    all listeners together) it stops polling the listeners, so new clients wait in the kernel's
    backlogs and are served in turn as slots free.
    """

    def __init__(self, listeners, max_conns: int, stop):
        self.listeners = list(listeners)
        self.max_conns = max_conns
        self.stop = stop
        self.active = 0
        self.closed = False
        self._lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.errors = AcceptErrorLog()

    def _room(self) -> bool:
        return not self.max_conns or self.active < self.max_conns

    def released(self) -> None:
        """A connection ended: free its slot and wake the loop (any thread may call this, even
        while or after the engine closes the acceptor: a pool thread finishing a close)."""
        with self._lock:
            self.active -= 1
            if not self.closed:
                self.wake()

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass  # full: the loop has a wake-up pending anyway

    def _started(self, start_connection):
        def start(sock, peer):
            with self._lock:
                self.active += 1
            start_connection(sock, peer)
        return start

    def run(self, start_connection, on_wake=None, *, tick=None, period: float = 1.0) -> None:
        """Accept until the stop is set. ``start_connection(sock, peer)`` must not block;
        ``on_wake()`` runs after every wake-up (the process engine reaps children there);
        ``tick()`` runs at least every ``period`` seconds (the threadpool engine's timeouts)."""
        by_fd = {}
        for listener in self.listeners:
            listener.setblocking(False)
            by_fd[listener.fileno()] = listener
        stop_fd = self.stop.fileno()
        start = self._started(start_connection)
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        poller.register(stop_fd, select.POLLIN)
        listening = False
        while not self.stop.is_set():
            if self._room() != listening:
                listening = not listening
                for listen_fd in by_fd:
                    poller.register(listen_fd, select.POLLIN) if listening else poller.unregister(listen_fd)
            events = poller.poll(int(period * 1000))
            if tick is not None:
                tick()
            for fd, _ in events:
                listener = by_fd.get(fd)
                if listener is not None:
                    if listening and not accept_some(listener, start, self.errors, room=self._room):
                        time.sleep(ACCEPT_BACKOFF_SECONDS)  # descriptors free up as connections close
                    continue
                if fd == stop_fd:
                    self.stop.drain()
                else:
                    drain_pipe(self.wake_r)
                if on_wake is not None:
                    on_wake()

    def close(self) -> None:
        with self._lock:  # no wake() can write to the pipe's descriptors once they are closed
            self.closed = True
            os.close(self.wake_r)
            os.close(self.wake_w)
