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

TLS: a connection's socket is a non-blocking SSL socket, and its handshake is done in the same
epoll loop, a step per edge, so a client that stalls its handshake holds no pool thread; the
sweep closes it at ``--request-timeout``. A TLS connection reads until the SSL layer wants more
bytes (one read returns one TLS record, so a short read does not mean the socket is empty), and
writes through :func:`~multiserve.tls.send_all`, which waits for room (``--idle-timeout``).
"""
from __future__ import annotations

import functools
import logging
import select
import socket
import ssl
import threading
import time

from ..session import CLOSE, FAILED, PENDING, SETTLED
from ..tls import handshake_failed, send_all
from . import timeouts as deadlines
from .acceptor import Acceptor
from .base import (RECV_SIZE, Engine, ServeStats, answer_in_turns, close_with_error, describe_error, send_reply,
                   set_nodelay, yield_gil)

log = logging.getLogger(__name__)

# 32: concurrent.futures' own default is min(32, cores + 4); we take its ceiling.
DEFAULT_THREADS = 32
# 16 reads of 64 KiB: a flooding client gets at most 1 MiB per turn before the others.
BATCHES_PER_TURN = 16
ARM = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
HANGUP = select.EPOLLRDHUP | select.EPOLLHUP


class Channel:
    """One connection. ``armed``: waiting in the epoll set (no thread has it); guarded by ``lock``
    against the sweeper, which may only close armed connections. ``more``: an edge came while a
    thread had it."""

    __slots__ = ("sock", "fd", "session", "last_active", "request_started", "armed", "more", "lock", "closed",
                 "handshaking", "tls", "flags", "sendall")

    def __init__(self, sock, session, send_timeout: float | None = None):
        """``send_timeout``: given for a TLS connection (``sock`` a non-blocking SSL socket
        whose handshake is still to do)."""
        self.sock = sock
        self.fd = sock.fileno()
        self.tls = self.handshaking = send_timeout is not None
        self.flags = 0 if self.tls else socket.MSG_DONTWAIT  # an SSL socket takes no recv flags
        self.sendall = functools.partial(send_all, sock, send_timeout) if self.tls else sock.sendall
        self.session = session
        self.last_active = time.monotonic()
        self.request_started = None
        self.armed = False
        self.more = False
        self.lock = threading.Lock()
        self.closed = False


class ThreadPoolEngine(Engine):
    name = "threadpool"

    def serve(self, listeners, sessions, *, ready, stop):
        config = self.config
        self.sessions, self.stats = sessions, ServeStats()
        self.epoll = select.epoll()
        self.channels: dict[int, Channel] = {}
        self.stopping = False
        self.done = False
        self.emptied = threading.Condition()
        self.acceptor = acceptor = Acceptor(listeners, config.max_conns, stop)
        self.period = deadlines.sweep_period(config)
        threads = [threading.Thread(target=self._follow, name=f"pool-{i}", daemon=True)
                   for i in range(config.threads_or(DEFAULT_THREADS))]
        for t in threads:
            t.start()
        ready()
        try:
            acceptor.run(self._accept, tick=self._sweep, period=self.period)
        finally:
            self._drain()
            acceptor.close()
            self.epoll.close()
        return self.stats

    # -- main thread -------------------------------------------------------------------------
    def _accept(self, sock, peer) -> None:
        session = self.sessions.make_session(peer)
        try:
            sock.setblocking(True)
            set_nodelay(sock)  # not on a unix socket
            # a send that makes no progress this long fails (client not reading)
            deadlines.set_kernel_timeouts(sock, send=self.config.idle_timeout)
            if self.tls is not None:  # the handshake is done by the pool, without blocking
                sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                sock.setblocking(False)
        except OSError as exc:
            session.log_error(describe_error(exc))
            greeting = b""
        else:
            greeting = session.start()
        channel = Channel(sock, session, self.config.idle_timeout if self.tls is not None else None)
        if channel.handshaking:
            channel.request_started = channel.last_active  # the sweep bounds the handshake
        if greeting is not None:
            self.channels[channel.fd] = channel
            threading.Thread(target=self._close, args=(channel, greeting), daemon=True).start()
            return
        self.channels[channel.fd] = channel
        channel.armed = True
        self.epoll.register(channel.fd, ARM)

    def _sweep(self) -> None:
        """Close armed connections past a deadline; the linger of the error reply runs off-thread."""
        now = time.monotonic()
        for channel in list(self.channels.values()):
            reason = deadlines.expired(self.config, now, channel.last_active, channel.request_started)
            if reason is not None and self._disarm(channel):
                if channel.handshaking:  # nothing to tell a client that never finished its handshake
                    channel.session.log_error(handshake_failed(TimeoutError(), self.config.request_timeout).strerror)
                    threading.Thread(target=self._close, args=(channel,), daemon=True).start()
                    continue
                channel.session.log_error(reason)
                reply = channel.session.error_reply(reason)
                threading.Thread(target=self._close, args=(channel, reply), daemon=True).start()

    def _disarm(self, channel: Channel) -> bool:
        """Take an armed connection out of the epoll set; False if a thread has it."""
        with channel.lock:
            if not channel.armed:
                return False
            channel.armed = False
        try:
            self.epoll.unregister(channel.fd)
        except (OSError, ValueError):  # ValueError: the epoll set is closed (the engine is done)
            pass
        return True

    def _drain(self) -> None:
        self.stopping = True
        for channel in list(self.channels.values()):
            if self._disarm(channel):  # idle: answer what it already sent, then close
                self._answer_buffered(channel)
                self._close(channel)
        with self.emptied:
            if not self.emptied.wait_for(lambda: not self.channels, self.config.grace):
                log.warning("grace period of %.1fs over: closed %d connections still busy",
                            self.config.grace, len(self.channels))
                for channel in list(self.channels.values()):
                    try:  # the descriptor's shutdown: an SSL socket's own drops its TLS state (channels.shutdown)
                        socket.socket.shutdown(channel.sock, socket.SHUT_RDWR)
                    except OSError:
                        pass
                self.emptied.wait_for(lambda: not self.channels, 1.0)
        self.done = True

    # -- pool threads ------------------------------------------------------------------------
    def _follow(self) -> None:
        poll, channels = self.epoll.poll, self.channels
        while not self.done:
            try:
                events = poll(self.period, 1)
            except (InterruptedError, ValueError, OSError):  # ValueError/OSError: closed at exit
                if self.done:
                    return
                continue
            for fd, mask in events:
                channel = channels.get(fd)
                if channel is None:
                    continue
                with channel.lock:
                    if not channel.armed:  # a thread has it (or the sweeper): it reads again
                        channel.more = True
                        continue
                    channel.armed = False
                self._serve_ready(channel, mask & HANGUP)

    def _serve_ready(self, channel: Channel, hangup: int) -> None:
        """Answer what the client sent, then hand it back (or close it).

        A client with more waiting (pipelining, a flood) keeps its thread for up to
        BATCHES_PER_TURN reads, so one thread, and one malloc arena, serves a burst instead of
        all of them in turn; the bound keeps the pool fair to everyone else.
        """
        for _ in range(BATCHES_PER_TURN):
            if not self._serve_batch(channel, hangup):
                return
        self._rearm(channel)  # data may be left, and no new edge will say so: re-evaluate

    def _serve_batch(self, channel: Channel, hangup: int) -> bool:
        """One read and its replies. True if the client may have sent more right away.

        ``hangup``: the edge that woke us also carried the client's FIN, so a short read did not
        empty the socket: the end of file is still to read, and no new edge will announce it."""
        sock, session = channel.sock, channel.session
        if channel.handshaking:
            return self._handshake(channel)
        try:
            data = sock.recv(RECV_SIZE, channel.flags)
            if not data:
                last = session.receive_eof()
                if last and not self.stopping:
                    send_reply(channel.sendall, session.answer_all(last))
                self._close(channel)
                return False
            requests = session.receive(data)
            if requests:  # a long pipeline in quanta, the GIL handed over between them
                answer_in_turns(session, requests, channel.sendall, yield_gil)
        except (BlockingIOError, ssl.SSLWantReadError):
            return self._release(channel)
        except OSError as exc:
            session.log_error(describe_error(exc))
            self._close(channel)
            return False
        status = SETTLED if session.protocol.settled else session.status()
        if status == FAILED:
            session.log_error(session.error.reason)
            self._close(channel, session.error.reply)
            return False
        if self.stopping or status == CLOSE:
            self._close(channel, b"" if status == CLOSE else None)
            return False
        channel.last_active = now = time.monotonic()
        channel.request_started = (channel.request_started or now) if status == PENDING else None
        if len(data) < RECV_SIZE and not hangup and not channel.tls:  # the read emptied the socket: later
            return self._release(channel)                                 # data makes a new edge
        return True

    def _handshake(self, channel: Channel) -> bool:
        """One step of a TLS handshake; True once done (the client's first request may be
        waiting already). A handshake that wants to write more than the socket takes (not with
        a fresh connection's empty buffer) waits for the sweep's deadline like a stalled one."""
        try:
            channel.sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return self._release(channel)
        except (OSError, ValueError) as exc:
            channel.session.log_error(handshake_failed(exc, self.config.request_timeout).strerror)
            self._close(channel)
            return False
        channel.handshaking = False
        channel.request_started = None
        channel.last_active = time.monotonic()
        return True

    def _release(self, channel: Channel) -> bool:
        """Hand the connection back: it stays registered (edge-triggered), so no system call.
        True if an edge came while we had it: read again instead."""
        with channel.lock:
            if channel.more:
                channel.more = False
                return True
            channel.armed = True
        self._close_if_drain_passed(channel)
        return False

    def _rearm(self, channel: Channel) -> None:
        """Hand the connection back and have epoll re-check it (``EPOLL_CTL_MOD`` queues an
        event if data is already waiting)."""
        with channel.lock:
            channel.more = False
            channel.armed = True
        try:
            self.epoll.modify(channel.fd, ARM)
        except (OSError, ValueError):  # ValueError: the epoll set is closed (the engine is done)
            self._close(channel)
            return
        self._close_if_drain_passed(channel)

    def _close_if_drain_passed(self, channel: Channel) -> None:
        """After a hand-back: the drain may have passed this connection by while we had it."""
        if self.stopping and self._disarm(channel):
            self._answer_buffered(channel)
            self._close(channel)

    @staticmethod
    def _answer_buffered(channel: Channel) -> None:
        if channel.handshaking:
            return
        try:
            data = channel.sock.recv(RECV_SIZE, channel.flags)
            requests = channel.session.receive(data) if data else []
            if requests:
                send_reply(channel.sendall, channel.session.answer_all(requests))
        except OSError:
            pass

    def _close(self, channel: Channel, reply: bytes | None = None) -> None:
        """Close once (any thread). ``reply``: None closes at once; bytes (even empty) are
        delivered first, with the shutdown-and-discard of ``close_with_error``."""
        with channel.lock:
            if channel.closed:
                return
            channel.closed = True
        session = channel.session
        session.finish()
        self.stats.add_session(session)
        self.channels.pop(channel.fd, None)  # before the close: once closed, the fd may be reused
        if reply is not None:
            close_with_error(channel.sock, reply)
        else:
            try:
                channel.sock.close()
            except OSError:
                pass
        self.acceptor.released()
        if self.stopping:
            with self.emptied:
                self.emptied.notify_all()
