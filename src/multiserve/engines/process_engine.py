"""``process``: a process per connection, the classic fork-per-client server.

The parent accepts and forks; the child closes the listener, serves its one client and exits.
Children are reaped as SIGCHLD arrives (no zombies), counted against ``--max-conns``, and on
SIGTERM the parent forwards SIGTERM, waits up to ``--grace`` for them to finish their in-flight
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

from .base import Engine
from .blocking import Acceptor, ConnectionLoop, Connections

log = logging.getLogger("multiserve")


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


class ProcessEngine(Engine):
    name = "process"

    def serve(self, listener, service, *, ready, stats):
        counts = SharedCounts()
        children: set[int] = set()
        acceptor = Acceptor(listener, self.config.max_conns, extra_signals=(signal.SIGCHLD,))

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
                self._child(listener, acceptor, sock, peer, service, counts)
            children.add(pid)
            sock.close()

        # Move every object made so far out of the collector's reach, so that a child's garbage
        # collections do not write to (and so copy) the pages it shares with us.
        gc.freeze()
        ready()
        try:
            acceptor.run(start, on_wake=reap)
        finally:
            self._drain(children, reap)
            acceptor.close()
            stats.add(*counts.array)

    def _child(self, listener, acceptor, sock, peer, service, counts) -> None:
        """Runs in the forked child; never returns."""
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            listener.close()
            os.close(acceptor.wake_r)
            os.close(acceptor.wake_w)
            connections = Connections()

            def on_stop(signum, frame):
                # The child's only loop is its connection, blocked in recv: waking it is the
                # whole of the stop, so the handler does it. It runs on this same thread between
                # bytecodes, hence no lock (the set cannot change under it).
                connections.stopping = True
                for track in connections.tracks_unlocked():
                    if track.idle:
                        connections.shutdown_read(track)

            signal.signal(signal.SIGTERM, on_stop)
            signal.signal(signal.SIGINT, on_stop)
            ConnectionLoop(service, self.config, counts, connections, kernel_timeouts=True)(sock, peer)
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
