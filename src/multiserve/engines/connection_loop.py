"""The blocking connection loop of the thread, process and gevent engines.

These engines differ only in *where* a connection is served (a new thread, a forked child, a
greenlet), exactly as CPython's socketserver servers differ only in ``process_request``, and in
how its timeouts are enforced (``timeouts``: :class:`KernelTimeouts` for OS threads, a watchdog
for gevent). The loop reads, lets the session frame and answer on its own thread, and writes;
the kernel (or gevent's hub) does the waiting.
"""
from __future__ import annotations

import logging
import socket
import time

from ..session import FAILED, PENDING, SETTLED
from ..tls import handshake
from . import timeouts as deadlines
from .base import (PIPELINE_QUANTUM, RECV_SIZE, answer_in_turns, close_with_error, describe_error, send_reply,
                   set_nodelay)
from .channels import Channel, Channels

log = logging.getLogger(__name__)


class KernelTimeouts:
    """Timeouts on OS threads: ``SO_RCVTIMEO``/``SO_SNDTIMEO`` make a blocking recv or send that
    makes no progress fail, which costs nothing per request."""

    def __init__(self, idle: float):
        self.idle = idle

    def opened(self, sock, channel: Channel) -> None:
        sock.setblocking(True)
        deadlines.set_kernel_timeouts(sock, recv=self.idle, send=self.idle)

    def request_begun(self, sock, channel: Channel, left: float) -> None:
        deadlines.set_kernel_timeouts(sock, recv=min(self.idle, left))

    def request_done(self, sock, channel: Channel) -> None:
        deadlines.set_kernel_timeouts(sock, recv=self.idle)

    def sender(self, sock, channel: Channel):
        return sock.sendall


class SocketTimeouts(KernelTimeouts):
    """Timeouts of a TLS connection on an OS thread: Python's socket timeout, not the kernel's.
    On a blocking SSL socket the ssl module retries a read that SO_RCVTIMEO cut short, forever,
    so the kernel's timeout never fires there; a socket timeout costs a poll before each read,
    small beside the decryption."""

    def opened(self, sock, channel: Channel) -> None:
        sock.settimeout(self.idle)

    def request_begun(self, sock, channel: Channel, left: float) -> None:
        sock.settimeout(max(min(self.idle, left), 0.001))

    def request_done(self, sock, channel: Channel) -> None:
        sock.settimeout(self.idle)


class ConnectionLoop:
    """Serves one connection to the end on the calling thread (or greenlet).

    ``__call__(sock, peer)`` returns when the connection is closed (it always closes ``sock``),
    and adds the connection's counts to ``stats``. It never raises for a client's misbehaviour:
    that costs one log line at most.
    """

    def __init__(self, sessions, config, stats, channels: Channels, timeouts, tls=None, yield_turn=None):
        self.sessions = sessions
        # A long pipeline is answered PIPELINE_QUANTUM requests per turn, then yield_turn() lets
        # the others have theirs: a gevent greenlet whose socket always has data never blocks,
        # so never yields (gevent_engine.TURN_SLEEP); a thread holds the GIL for whole switch
        # intervals while the others queue for it on every recv and send (time.sleep(0) hands
        # it over). None: answered in one go (a process per connection)
        self.yield_turn = yield_turn
        self.config = config
        self.stats = stats
        self.channels = channels
        self.timeouts = timeouts
        self.tls = tls  # an ssl.SSLContext: each connection is wrapped, on its own thread/greenlet

    def __call__(self, sock: socket.socket, peer) -> None:
        channel = self.channels.add(sock)
        session = self.sessions.make_session(peer)
        try:
            set_nodelay(sock)  # not on a unix socket
            if self.tls is not None:
                sock = channel.sock = handshake(sock, self.tls, self.config.request_timeout)
            self.timeouts.opened(sock, channel)
            greeting = session.start()
            if greeting is not None:
                close_with_error(sock, greeting)
            else:
                self._serve(sock, session, channel)
        except OSError as exc:
            # An idle connection woken by the stop's shutdown is no error; gevent raises one into
            # its recv ("File descriptor was closed in another greenlet") where threads see EOF.
            if not (self.channels.stopping and channel.idle):
                session.log_error(describe_error(exc))
        finally:
            session.finish()
            try:
                sock.close()
            except OSError:
                pass
            self.stats.add_session(session)
            self.channels.remove(channel)  # last: the drain waits for this, then prints the counts

    def _serve(self, sock, session, channel: Channel) -> None:
        request_deadline = None
        recv, receive, answer = sock.recv, session.receive, session.answer
        send = self.timeouts.sender(sock, channel)
        channels, timeouts = self.channels, self.timeouts
        while True:
            channel.idle = True
            if channels.stopping:
                return self._answer_buffered(sock, session, send, self.tls is not None)
            try:
                data = recv(RECV_SIZE)
            except (BlockingIOError, TimeoutError):
                now = time.monotonic()
                reason = deadlines.REQUEST if request_deadline is not None and now >= request_deadline else deadlines.IDLE
                session.log_error(reason)
                return close_with_error(sock, session.error_reply(reason))
            channel.idle = False
            if not data:
                last = session.receive_eof()
                if last and not channels.stopping:
                    send_reply(send, session.answer_all(last))
                return
            requests = receive(data)
            if requests:
                if len(requests) > PIPELINE_QUANTUM and self.yield_turn is not None:
                    answer_in_turns(session, requests, send, self.yield_turn)
                else:
                    reply = answer(requests[0]) if len(requests) == 1 else session.answer_all(requests)
                    send(reply) if type(reply) is bytes else send_reply(send, reply)
            status = SETTLED if session.protocol.settled else session.status()
            if status == SETTLED:
                if request_deadline is not None:
                    request_deadline = None
                    timeouts.request_done(sock, channel)
            elif status == PENDING:
                now = time.monotonic()
                if request_deadline is None:
                    request_deadline = now + self.config.request_timeout
                timeouts.request_begun(sock, channel, request_deadline - now)
            elif status == FAILED:
                session.log_error(session.error.reason)
                return close_with_error(sock, session.error.reply)
            else:
                return close_with_error(sock, None)

    def _answer_buffered(self, sock, session, send, tls: bool) -> None:
        """On stop: answer whole requests the client already sent, without waiting for more."""
        try:
            if tls:  # an SSL socket takes no recv flags: non-blocking for this one read
                sock.settimeout(0)
                try:
                    data = sock.recv(RECV_SIZE)
                finally:
                    sock.settimeout(self.config.idle_timeout)
            else:
                data = sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except OSError:
            return
        requests = session.receive(data) if data else []
        if requests:
            send_reply(send, session.answer_all(requests))
