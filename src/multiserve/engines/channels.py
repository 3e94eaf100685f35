"""The live connections of a blocking engine (thread, process, gevent), and how they stop.

A :class:`Channel` is one connection as the engine sees it: its socket and whether it waits for
the client (``idle``) or is writing (``sending``); a watchdog (gevent's) also reads
``last_active``, ``owner`` and ``watched``. :class:`Channels` holds them and the stop flag.

Graceful stop without polling: a connection marks itself idle *before* it checks the stop flag
and blocks in ``recv``; the stopper sets the flag *before* it looks at the idle marks and shuts
down the read side of the idle ones (which wakes their ``recv`` with EOF). Whichever runs second
sees the other's write, so no connection sleeps through a stop, and a busy one finishes its
request and delivers the reply first.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

log = logging.getLogger(__name__)


class Channel:
    """One live connection of a blocking engine."""

    __slots__ = ("sock", "idle", "sending", "last_active", "owner", "watched")

    def __init__(self, sock):
        self.sock = sock
        self.idle = False
        self.sending = False
        self.last_active = time.monotonic()
        self.owner = None  # the greenlet serving it, under a watchdog
        self.watched = False


class Channels:
    """The live connections of one serving process, and the stop flag they watch."""

    def __init__(self):
        self.stopping = False
        self._live: set[Channel] = set()
        self._lock = threading.Lock()
        self._empty = threading.Condition(self._lock)

    def add(self, sock) -> Channel:
        channel = Channel(sock)
        with self._lock:
            self._live.add(channel)
        return channel

    def remove(self, channel: Channel) -> None:
        with self._lock:
            self._live.discard(channel)
            if not self._live:
                self._empty.notify_all()

    def __len__(self) -> int:
        return len(self._live)

    def snapshot(self) -> list[Channel]:
        """Without the lock: for a caller on the connections' own thread (a watchdog greenlet,
        a stop callback run between bytecodes), which must not take it."""
        return list(self._live)

    def stop(self) -> None:
        """Ask every connection to finish: idle ones wake now, busy ones after their reply."""
        self.stopping = True
        for channel in self.snapshot():
            if channel.idle:
                shutdown(channel.sock, socket.SHUT_RD)

    def wait_empty(self, timeout: float) -> bool:
        with self._lock:
            return self._empty.wait_for(lambda: not self._live, timeout)

    def abort_all(self) -> int:
        """Past the grace period: cut every connection still open. Returns how many."""
        channels = self.snapshot()
        for channel in channels:
            shutdown(channel.sock, socket.SHUT_RDWR)
        return len(channels)

    def drain(self, grace: float) -> None:
        """Stop every connection, wait up to ``grace`` for in-flight replies, then cut the rest."""
        self.stop()
        if not self.wait_empty(grace):
            n = self.abort_all()
            log.warning("grace period of %.1fs over: closed %d connections still busy", grace, n)
            self.wait_empty(1.0)


def shutdown(sock, how) -> None:
    try:
        if isinstance(sock, ssl.SSLSocket):
            # SSLSocket.shutdown also drops its TLS state (``_sslobj = None``) under the feet of
            # the thread reading it (an AttributeError there); the descriptor's own shutdown
            # wakes that reader just the same. (gevent's SSL socket is no SSLSocket, and its
            # greenlets are never caught between two lines.)
            socket.socket.shutdown(sock, how)
        else:
            sock.shutdown(how)
    except OSError:
        pass
