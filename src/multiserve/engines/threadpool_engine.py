"""``threadpool``: a bounded pool of ``--threads`` threads serving any number of connections.

A pool that gives each thread one connection until it closes (the easy design) lets 32 idle
clients starve the 33rd until the idle timeout. Here, as in gunicorn's ``gthread`` worker, a
thread holds a connection only while it has a request to answer: idle connections wait in one
epoll set, edge-triggered, and a connection belongs to at most one thread at a time (``armed``
under its lock). The pool threads themselves wait in ``epoll.poll`` (leader/followers): a ready
connection goes straight to the thread that saw it, with no queue or hand-off between threads.
An edge that arrives while a thread serves the connection only marks it (``more``), and that
thread reads again before letting it go. Edge- rather than one-shot triggering saves an
``epoll_ctl`` per request, and with it one release and re-take of the GIL: under load, each
release is a hand-off to another thread (docs/benchmarks.md: the GIL convoy of 32 pool threads
on 2 cores).

The main thread accepts (``Acceptor``) and, every sweep period, closes connections past their
idle or request deadline; connections being served are never touched by the sweep.
"""
from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time

from ..protocol import error_reply
from ..session import CallPlan, Session
from .base import RECV_SIZE, Engine, close_with_error, describe_peer
from .blocking import Acceptor, describe_error

log = logging.getLogger("multiserve")

# 32: concurrent.futures' own default is min(32, cores + 4); we take its ceiling.
DEFAULT_THREADS = 32
IDLE_TIMEOUT = error_reply("idle timeout")
REQUEST_TIMEOUT = error_reply("request timeout")
# 16 reads of 64 KiB: a flooding client gets at most 1 MiB per turn before the others.
BATCHES_PER_TURN = 16
ARM = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
HANGUP = select.EPOLLRDHUP | select.EPOLLHUP


class Conn:
    """One connection. ``armed``: waiting in the epoll set (no thread has it); guarded by ``lock``
    against the sweeper, which may only close armed connections. ``more``: an edge came while a
    thread had it."""

    __slots__ = ("sock", "fd", "session", "last_active", "request_started", "armed", "more", "lock", "closed", "error")

    def __init__(self, sock, session):
        self.sock = sock
        self.fd = sock.fileno()
        self.session = session
        self.last_active = time.monotonic()
        self.request_started = None
        self.armed = False
        self.more = False
        self.lock = threading.Lock()
        self.closed = False
        self.error = 0


class ThreadPoolEngine(Engine):
    name = "threadpool"

    def serve(self, listener, service, *, ready, stats):
        config = self.config
        self.service, self.plan, self.stats = service, CallPlan(service), stats
        self.epoll = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.stopping = False
        self.done = False
        self.emptied = threading.Condition()
        self.acceptor = acceptor = Acceptor(listener, config.max_conns)
        self.period = min(1.0, config.idle_timeout / 4, config.request_timeout / 4)
        threads = [threading.Thread(target=self._follow, name=f"pool-{i}", daemon=True)
                   for i in range(config.threads_or(DEFAULT_THREADS))]
        for t in threads:
            t.start()
        ready()
        try:
            acceptor.run(self._adopt, tick=self._sweep, period=self.period)
        finally:
            self._drain()
            acceptor.close()
            self.epoll.close()

    # -- main thread -------------------------------------------------------------------------
    def _adopt(self, sock, peer) -> None:
        idle = self.config.idle_timeout
        try:
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sec = int(idle)  # a send that makes no progress this long fails (client not reading)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", sec, int((idle - sec) * 1e6)))
            conn = Conn(sock, Session(self.service, self.config.max_line, peer, self.plan))
        except Exception as exc:
            log.error("connection %s: setup failed: %s: %s", describe_peer(peer), type(exc).__name__, exc)
            sock.close()
            self.acceptor.released()
            return
        self.conns[conn.fd] = conn
        conn.armed = True
        self.epoll.register(conn.fd, ARM)

    def _sweep(self) -> None:
        """Close armed connections past a deadline; the linger of the ERR line runs off-thread."""
        now = time.monotonic()
        config = self.config
        for conn in list(self.conns.values()):
            if conn.request_started is not None and now >= conn.request_started + config.request_timeout:
                reply, why = REQUEST_TIMEOUT, "request timeout"
            elif now >= conn.last_active + config.idle_timeout:
                reply, why = IDLE_TIMEOUT, "idle timeout"
            else:
                continue
            if self._disarm(conn):
                log.info("connection %s: %s", describe_peer(conn.session.conn.peer), why)
                conn.error = 1
                threading.Thread(target=self._close, args=(conn, reply), daemon=True).start()

    def _disarm(self, conn: Conn) -> bool:
        """Take an armed connection out of the epoll set; False if a thread has it."""
        with conn.lock:
            if not conn.armed:
                return False
            conn.armed = False
        try:
            self.epoll.unregister(conn.fd)
        except OSError:
            pass
        return True

    def _drain(self) -> None:
        self.stopping = True
        for conn in list(self.conns.values()):
            if self._disarm(conn):  # idle: answer what it already sent, then close
                self._answer_buffered(conn)
                self._close(conn)
        with self.emptied:
            if not self.emptied.wait_for(lambda: not self.conns, self.config.grace):
                log.warning("grace period of %.1fs over: closed %d connections still busy",
                            self.config.grace, len(self.conns))
                for conn in list(self.conns.values()):
                    try:
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                self.emptied.wait_for(lambda: not self.conns, 1.0)
        self.done = True

    # -- pool threads ------------------------------------------------------------------------
    def _follow(self) -> None:
        poll, conns = self.epoll.poll, self.conns
        while not self.done:
            try:
                events = poll(self.period, 1)
            except (InterruptedError, ValueError, OSError):  # ValueError/OSError: closed at exit
                if self.done:
                    return
                continue
            for fd, mask in events:
                conn = conns.get(fd)
                if conn is None:
                    continue
                with conn.lock:
                    if not conn.armed:  # a thread has it (or the sweeper): it reads again
                        conn.more = True
                        continue
                    conn.armed = False
                self._serve_ready(conn, mask & HANGUP)

    def _serve_ready(self, conn: Conn, hangup: int) -> None:
        """Answer what the client sent, then hand it back (or close it).

        A client with more waiting (pipelining, a flood) keeps its thread for up to
        BATCHES_PER_TURN reads, so one thread, and one malloc arena, serves a burst instead of
        all of them in turn; the bound keeps the pool fair to everyone else.
        """
        for _ in range(BATCHES_PER_TURN):
            if not self._serve_batch(conn, hangup):
                return
        self._rearm(conn)  # data may be left, and no new edge will say so: re-evaluate

    def _serve_batch(self, conn: Conn, hangup: int) -> bool:
        """One read and its replies. True if the client may have sent more right away.

        ``hangup``: the edge that woke us also carried the client's FIN, so a short read did not
        empty the socket: the end of file is still to read, and no new edge will announce it."""
        sock, session = conn.sock, conn.session
        try:
            data = sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return self._release(conn)
        except OSError as exc:
            conn.error = 1
            log.info("connection %s: %s", describe_peer(session.conn.peer), describe_error(exc))
            self._close(conn)
            return False
        try:
            if not data:
                last = session.eof()
                if last is not None and not self.stopping:
                    sock.sendall(session.handle(last))
                self._close(conn)
                return False
            lines = session.receive(data)
            if lines:
                handle = session.handle
                sock.sendall(handle(lines[0]) if len(lines) == 1 else b"".join([handle(line) for line in lines]))
        except OSError as exc:
            conn.error = 1
            log.info("connection %s: %s", describe_peer(session.conn.peer), describe_error(exc))
            self._close(conn)
            return False
        if session.failed:
            conn.error = 1
            log.info("connection %s: %s", describe_peer(session.conn.peer), session.framer.error)
            self._close(conn, session.error)
            return False
        conn.last_active = now = time.monotonic()
        if session.pending:
            if conn.request_started is None:
                conn.request_started = now
        else:
            conn.request_started = None
        if self.stopping:
            self._close(conn)
            return False
        if len(data) < RECV_SIZE and not hangup:  # the read emptied the socket: later data makes a new edge
            return self._release(conn)
        return True

    def _release(self, conn: Conn) -> bool:
        """Hand the connection back: it stays registered (edge-triggered), so no system call.
        True if an edge came while we had it: read again instead."""
        with conn.lock:
            if conn.more:
                conn.more = False
                return True
            conn.armed = True
        self._close_if_drain_passed(conn)
        return False

    def _rearm(self, conn: Conn) -> None:
        """Hand the connection back and have epoll re-check it (``EPOLL_CTL_MOD`` queues an
        event if data is already waiting)."""
        with conn.lock:
            conn.more = False
            conn.armed = True
        try:
            self.epoll.modify(conn.fd, ARM)
        except OSError:
            self._close(conn)
            return
        self._close_if_drain_passed(conn)

    def _close_if_drain_passed(self, conn: Conn) -> None:
        """After a hand-back: the drain may have passed this connection by while we had it."""
        if self.stopping and self._disarm(conn):
            self._answer_buffered(conn)
            self._close(conn)

    @staticmethod
    def _answer_buffered(conn: Conn) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            lines = conn.session.receive(data) if data else []
            if lines:
                conn.sock.sendall(b"".join([conn.session.handle(line) for line in lines]))
        except OSError:
            pass

    def _close(self, conn: Conn, reply: bytes | None = None) -> None:
        with conn.lock:
            if conn.closed:
                return
            conn.closed = True
        session = conn.session
        session.finish()
        self.stats.add(connections=1, requests=session.requests, errors=conn.error)
        self.conns.pop(conn.fd, None)  # before the close: once closed, the fd may be reused
        if reply is not None:
            close_with_error(conn.sock, reply)
        else:
            try:
                conn.sock.close()
            except OSError:
                pass
        self.acceptor.released()
        if self.stopping:
            with self.emptied:
                self.emptied.notify_all()
