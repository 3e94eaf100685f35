"""``process``: a process per connection, the classic fork-per-client server.

The parent accepts and forks; the child closes the listeners, serves its one client and exits.
Children are reaped as SIGCHLD arrives (no zombies), counted against ``--max-conns``, and on
stop the parent forwards SIGTERM, waits up to ``--grace`` for them to finish their in-flight
requests, then SIGKILLs what is left. Children add their counts to a shared-memory array so the
parent's exit summary covers them.
"""
from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import time

from ..stop import Stop, stop_on_signals
from .acceptor import Acceptor
from .base import Engine, ServeStats
from .channels import Channels
from .connection_loop import ConnectionLoop, KernelTimeouts, SocketTimeouts

log = logging.getLogger(__name__)


class SharedCounts:
    """ServeStats' ``add`` over shared memory, so forked children can report."""

    def __init__(self):
        self.array = multiprocessing.RawArray("q", 3)
        self.lock = multiprocessing.Lock()

    def add(self, connections=0, requests=0, errors=0):
        with self.lock:
            self.array[0] += connections
            self.array[1] += requests
            self.array[2] += errors

    def add_session(self, session) -> None:
        self.add(1, session.requests, session.errored)


class ProcessEngine(Engine):
    name = "process"

    def serve(self, listeners, sessions, *, ready, stop):
        counts = SharedCounts()
        children: set[int] = set()
        acceptor = Acceptor(listeners, self.config.max_conns, stop)

        def reap():
            while children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid == 0:
                    return
                if pid in children:
                    children.discard(pid)
                    code = os.waitstatus_to_exitcode(status)
                    if code != 0:
                        log.warning("connection process %d exited with %s", pid, _describe(code))
                    acceptor.released()

        def start(sock, peer):
            pid = os.fork()
            if pid == 0:
                self._child(listeners, acceptor, stop, sock, peer, sessions, counts)
            children.add(pid)
            sock.close()

        # SIGCHLD is this engine's own mechanism, not a stop: its handler only wakes the loop.
        old_chld = signal.signal(signal.SIGCHLD, lambda signum, frame: acceptor.wake())
        # Move every object made so far out of the collector's reach, so that a child's garbage
        # collections do not write to (and so copy) the pages it shares with us.
        gc.freeze()
        ready()
        try:
            acceptor.run(start, on_wake=reap)
        finally:
            self._drain(children, reap)
            signal.signal(signal.SIGCHLD, old_chld)
            acceptor.close()
        return ServeStats(*counts.array)

    def _child(self, listeners, acceptor, parent_stop, sock, peer, sessions, counts) -> None:
        """Runs in the forked child; never returns."""
        code = 0
        try:
            signal.set_wakeup_fd(-1)  # the parent's stop pipe, closed below
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            for listener in listeners:
                listener.close()
            acceptor.close()
            parent_stop.close()
            stop, channels = Stop(), Channels()
            # The child's only loop is its connection, blocked in recv: waking it is the whole
            # of the stop. The callback runs on this same thread between bytecodes (the signal
            # handler), so Channels.stop takes no lock.
            stop.add_callback(channels.stop)
            with stop_on_signals(stop):
                timeouts = (SocketTimeouts if self.tls else KernelTimeouts)(self.config.idle_timeout)
                ConnectionLoop(sessions, self.config, counts, channels, timeouts, self.tls)(sock, peer)
        except BaseException as exc:  # never let a child fall back into the parent's loop
            code = 1
            log.error("connection process: %s: %s", type(exc).__name__, exc)
        finally:
            logging.shutdown()
            os._exit(code)

    def _drain(self, children: set[int], reap) -> None:
        for pid in list(children):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.grace
        while children and time.monotonic() < deadline:
            reap()
            time.sleep(0.01)
        if children:
            log.warning("grace period of %.1fs over: killing %d connection processes",
                        self.config.grace, len(children))
            for pid in list(children):
                _signal(pid, signal.SIGKILL)
            while children:
                try:
                    pid, _ = os.waitpid(-1, 0)
                except ChildProcessError:
                    break
                children.discard(pid)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _describe(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
