"""The blocking connection loop shared by the process, thread, threadpool and gevent engines.

These four engines differ only in *where* ``serve_connection`` runs (a child process, a new
thread, a pool thread, a greenlet), exactly as CPython's socketserver servers differ only in
``process_request``. The loop reads, frames, calls the service on its own thread and writes; the
kernel does the waiting.

Timeouts: with OS threads the socket stays in blocking mode and the kernel enforces them
(``SO_RCVTIMEO``/``SO_SNDTIMEO``: a receive or send that makes no progress for that long fails),
which costs nothing per request. Under gevent a socket timeout would start and stop a timer on
every wait (measured: a quarter of gevent's throughput), so the gevent engine runs a watchdog
instead, which raises :class:`IdleTimeout` into a connection idle in ``recv`` (or stuck in a
send) for too long; only a partial request line switches to a socket timeout.

Graceful stop without polling: a connection marks itself idle *before* it checks the stop flag
and blocks in ``recv``; the stopper sets the flag *before* it looks at the idle marks and shuts
down the read side of the idle ones (which wakes their ``recv`` with EOF). Whichever runs second
sees the other's write, so no connection sleeps through a stop, and a busy one finishes its
request and delivers the reply first.
"""
from __future__ import annotations

import functools
import logging
import os
import select
import signal
import socket
import struct
import threading
import time

from ..protocol import error_reply
from ..session import CallPlan, Session
from .base import RECV_SIZE, AcceptErrorLog, close_with_error, describe_peer

log = logging.getLogger("multiserve")

IDLE_TIMEOUT = error_reply("idle timeout")
REQUEST_TIMEOUT = error_reply("request timeout")
_TIMEVAL = "ll"


class IdleTimeout(TimeoutError):
    """Raised into a connection by a watchdog (the gevent engine's) when its wait is too long."""


class Track:
    """One live connection, as the stopper and a watchdog see it."""

    __slots__ = ("sock", "idle", "sending", "last_active", "owner", "watched")

    def __init__(self, sock):
        self.sock = sock
        self.idle = False
        self.sending = False
        self.last_active = time.monotonic()
        self.owner = None  # the greenlet serving it, under a watchdog
        self.watched = False


class Connections:
    """The live connections of one serving process, and the stop flag they watch."""

    def __init__(self):
        self.stopping = False
        self._live: set[Track] = set()
        self._lock = threading.Lock()
        self._empty = threading.Condition(self._lock)

    def add(self, sock) -> Track:
        track = Track(sock)
        with self._lock:
            self._live.add(track)
        return track

    def remove(self, track: Track) -> None:
        with self._lock:
            self._live.discard(track)
            if not self._live:
                self._empty.notify_all()

    def __len__(self) -> int:
        return len(self._live)

    def tracks_unlocked(self) -> list[Track]:
        """For a signal handler on the connection's own thread, which must not take the lock."""
        return list(self._live)

    @staticmethod
    def shutdown_read(track: Track) -> None:
        _shutdown(track.sock, socket.SHUT_RD)

    def stop(self) -> None:
        """Ask every connection to finish: idle ones wake now, busy ones after their reply."""
        self.stopping = True
        with self._lock:
            tracks = list(self._live)
        for track in tracks:
            if track.idle:
                self.shutdown_read(track)

    def wait_empty(self, timeout: float) -> bool:
        with self._lock:
            return self._empty.wait_for(lambda: not self._live, timeout)

    def abort_all(self) -> int:
        """Past the grace period: cut every connection still open. Returns how many."""
        with self._lock:
            tracks = list(self._live)
        for track in tracks:
            _shutdown(track.sock, socket.SHUT_RDWR)
        return len(tracks)


def _shutdown(sock, how) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass


class ConnectionLoop:
    """Serves one connection to the end on the calling thread (or greenlet).

    ``__call__(sock, peer)`` returns when the connection is closed (it always closes ``sock``),
    and adds the connection's counts to ``stats``. It never raises for a client's misbehaviour:
    that costs one log line at most.
    """

    def __init__(self, service, config, stats, connections: Connections, *, kernel_timeouts: bool,
                 current=None):
        """``kernel_timeouts``: OS threads (SO_RCVTIMEO/SO_SNDTIMEO). Otherwise a watchdog owns
        the idle timeout and ``current()`` returns the running greenlet it may raise into."""
        self.current = current
        self.service = service
        self.plan = CallPlan(service)
        self.config = config
        self.stats = stats
        self.connections = connections
        self.kernel_timeouts = kernel_timeouts

    def _set_recv_timeout(self, sock, seconds: float) -> None:
        seconds = max(seconds, 0.001)
        if self.kernel_timeouts:
            sec = int(seconds)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                            struct.pack(_TIMEVAL, sec, int((seconds - sec) * 1e6)))
        else:
            sock.settimeout(seconds)

    def _watchdog_owns_timeouts(self, sock, track: Track, owns: bool) -> None:
        if not self.kernel_timeouts:
            track.watched = owns
            if owns:
                sock.settimeout(None)

    def __call__(self, sock: socket.socket, peer) -> None:
        config = self.config
        idle = config.idle_timeout
        connections = self.connections
        track = connections.add(sock)
        error = 0
        session = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.kernel_timeouts:
                sock.setblocking(True)
                sec = int(idle)
                timeval = struct.pack(_TIMEVAL, sec, int((idle - sec) * 1e6))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
            else:
                sock.settimeout(None)
                track.owner = self.current()
                track.watched = True
            session = Session(self.service, config.max_line, peer, self.plan)
            error = self._loop(sock, session, track, idle)
        except OSError as exc:
            error = 1
            log.info("connection %s: %s", describe_peer(peer), describe_error(exc))
        except Exception as exc:  # a bug in a service's setup/finish: one line, keep serving
            error = 1
            log.error("connection %s: %s: %s", describe_peer(peer), type(exc).__name__, exc)
        finally:
            if session is not None:
                session.finish()
            try:
                sock.close()
            except OSError:
                pass
            self.stats.add(connections=1, requests=session.requests if session else 0, errors=error)
            connections.remove(track)  # last: the drain waits for this, then prints the counts

    def _loop(self, sock, session: Session, track: Track, idle: float) -> int:
        """Returns 1 if the connection ended on an error, else 0."""
        request_deadline = None
        recv = sock.recv
        send = sock.sendall if self.kernel_timeouts else functools.partial(self._send_watched, sock, track)
        handle = session.handle
        connections = self.connections
        while True:
            track.idle = True
            if connections.stopping:
                self._answer_buffered(sock, session)
                return 0
            try:
                data = recv(RECV_SIZE)
            except (BlockingIOError, TimeoutError):
                if request_deadline is not None and time.monotonic() >= request_deadline:
                    log.info("connection %s: request timeout", describe_peer(session.conn.peer))
                    close_with_error(sock, REQUEST_TIMEOUT)
                else:
                    log.info("connection %s: idle timeout", describe_peer(session.conn.peer))
                    close_with_error(sock, IDLE_TIMEOUT)
                return 1
            track.idle = False
            if not data:
                last = session.eof()
                if last is not None and not connections.stopping:
                    send(handle(last))
                return 0
            lines = session.receive(data)
            if lines:
                send(handle(lines[0]) if len(lines) == 1 else b"".join([handle(line) for line in lines]))
            if session.failed:
                log.info("connection %s: %s", describe_peer(session.conn.peer), session.framer.error)
                close_with_error(sock, session.error)
                return 1
            if session.pending:
                now = time.monotonic()
                if request_deadline is None:
                    request_deadline = now + self.config.request_timeout
                    self._watchdog_owns_timeouts(sock, track, False)
                self._set_recv_timeout(sock, min(idle, request_deadline - now))
            elif request_deadline is not None:
                request_deadline = None
                if self.kernel_timeouts:
                    self._set_recv_timeout(sock, idle)
                else:
                    self._watchdog_owns_timeouts(sock, track, True)

    @staticmethod
    def _send_watched(sock, track: Track, data: bytes) -> None:
        """The watchdog times a stuck send, and then the idle wait after it, from here: one
        clock read per reply, none per receive."""
        track.sending = True
        track.last_active = time.monotonic()
        try:
            sock.sendall(data)
        finally:
            track.sending = False

    def _answer_buffered(self, sock, session: Session) -> None:
        """On stop: answer whole requests the client already sent, without waiting for more."""
        try:
            data = sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except OSError:
            return
        lines = session.receive(data) if data else []
        if lines:
            sock.sendall(b"".join([session.handle(line) for line in lines]))


def describe_error(exc: OSError) -> str:
    if isinstance(exc, (BlockingIOError, TimeoutError)):
        return "send made no progress (client not reading); closed"
    if isinstance(exc, ConnectionResetError):
        return "reset by client"
    if isinstance(exc, BrokenPipeError):
        return "client went away mid-write"
    return exc.strerror or str(exc)


class Acceptor:
    """The accept loop of the OS-thread and process engines, run on the main thread.

    It waits in ``poll`` on the listener and on a self-pipe that both signals
    (``signal.set_wakeup_fd``) and finished connections write to; signal handlers only record
    the signal. Past ``max_conns`` open connections it stops accepting, so new clients wait in
    the kernel's backlog and are served in turn as slots free.
    """

    def __init__(self, listener, max_conns: int, *, extra_signals=()):
        self.listener = listener
        self.max_conns = max_conns
        self.active = 0
        self._lock = threading.Lock()
        self.signals: list[int] = []
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self._errors = AcceptErrorLog()
        self._old_wakeup = signal.set_wakeup_fd(self.wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT, *extra_signals):
            signal.signal(signum, self._record)

    def _record(self, signum, frame) -> None:
        self.signals.append(signum)

    @property
    def stop_requested(self) -> bool:
        return any(s in (signal.SIGTERM, signal.SIGINT) for s in self.signals)

    def released(self) -> None:
        """A connection ended: free its slot and wake the loop (any thread may call this)."""
        with self._lock:
            self.active -= 1
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass

    def run(self, start_connection, on_wake=None, *, tick=None, period: float = 1.0) -> None:
        """Accept until SIGTERM/SIGINT. ``start_connection(sock, peer)`` must not block;
        ``on_wake()`` runs after every wake-up (the process engine reaps children there);
        ``tick()`` runs at least every ``period`` seconds (the threadpool engine's timeouts)."""
        self.listener.setblocking(False)
        listen_fd = self.listener.fileno()
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        listening = False
        while not self.stop_requested:
            want = not self.max_conns or self.active < self.max_conns
            if want != listening:
                (poller.register(listen_fd, select.POLLIN) if want else poller.unregister(listen_fd))
                listening = want
            try:
                events = poller.poll(int(period * 1000))
            except InterruptedError:
                continue
            if tick is not None:
                tick()
            for fd, _ in events:
                if fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    if on_wake:
                        on_wake()
                elif listening:
                    self._accept_some(start_connection)

    def _accept_some(self, start_connection) -> None:
        # accept a burst, bounded so a connection flood cannot starve signal handling
        for _ in range(64):
            if self.max_conns and self.active >= self.max_conns:
                return
            try:
                sock, peer = self.listener.accept()
            except BlockingIOError:
                return
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as exc:
                if self._errors.failed(exc):
                    time.sleep(0.1)  # the backoff: fds free up as connections close
                    return
                raise
            self._errors.succeeded()
            with self._lock:
                self.active += 1
            start_connection(sock, peer)

    def close(self) -> None:
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self.wake_r)
        os.close(self.wake_w)


def watch_idle(connections: Connections, idle_timeout: float, now: float, raise_in) -> None:
    """One watchdog pass: raise IdleTimeout into each connection waiting longer than the idle
    timeout in ``recv`` or in a send (``raise_in(owner, exc_type)``). Run it every ``period``."""
    for track in connections.tracks_unlocked():
        if track.watched and (track.idle or track.sending) and now - track.last_active >= idle_timeout:
            track.watched = False  # once
            raise_in(track.owner, IdleTimeout)


def watchdog_period(idle_timeout: float) -> float:
    """A quarter of the timeout, at most a second: a timeout fires at most 25% late."""
    return min(1.0, idle_timeout / 4)


def drain(connections: Connections, grace: float, what: str = "connections") -> None:
    """Stop every connection, wait up to ``grace`` for in-flight replies, then cut the rest."""
    connections.stop()
    if not connections.wait_empty(grace):
        n = connections.abort_all()
        log.warning("grace period of %.1fs over: closed %d %s still busy", grace, n, what)
        connections.wait_empty(1.0)
