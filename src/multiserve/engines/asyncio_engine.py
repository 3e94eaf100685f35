"""``asyncio``: coroutines on one event loop (uvloop when installed, ``--no-uvloop`` to opt out).

Each connection is an ``asyncio.Protocol`` (:class:`~.asyncio_channel.Channel`); cheap,
non-blocking services are answered inside ``data_received``, coroutine services awaited,
blocking ones run on a thread pool (``--threads``, default 16), CPU-bound ones on the process
pool when the server has one (``hybrid``) and on the thread pool otherwise.

Timeouts cost nothing per request and no timer per connection: one sweeper per process (every
quarter of the shortest timeout, at most a second) closes the connections past a deadline.
Measured with 2,000 idle connections (RSS): a timer each (and an eager ``conn.state``) made one
2.5 KiB; without them it is 1.7 KiB. The ``hybrid`` engine's workers run this module's
:class:`LoopServer` with hooks of their own.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ..session import Pools
from ..tls import handshake_failed
from . import timeouts as deadlines
from .acceptor import ACCEPT_BACKOFF_SECONDS, AcceptErrorLog, accept_some
from .asyncio_channel import Channel
from .base import Engine, ServeStats
from .loops import loop_name, new_event_loop

log = logging.getLogger(__name__)

DEFAULT_BLOCKING_THREADS = 16


class LoopServer:
    """Accepts on every one of ``listeners`` and serves their connections on the running loop
    until ``stop``.

    Hooks (the hybrid engine's; each optional): ``admission(open_here) -> bool`` replaces the
    per-process ``--max-conns`` test; ``on_request(n)`` is told of every n replies;
    ``on_last_accept()`` runs right after the final accept on stop; ``cpu_pool`` takes CPU-bound
    calls; ``threads`` is the caller's executor for blocking calls (the multiloop engine's, shared
    by its loops: the caller then shuts it down, not the server); ``tls`` (an ``ssl.SSLContext``)
    serves TLS; ``handoff()``, called when a drain starts, returns a :class:`~.handoff.Courier`
    that takes each connection once idle instead of closing it, or None (never called with TLS:
    the TLS state is in this process); ``adopt(sock)`` takes in a connection another worker handed
    off. Accepting is ours, not ``loop.create_server``'s, for two reasons: past ``--max-conns`` we
    stop reading the listeners (clients wait in the backlogs; the limit counts all listeners'
    connections together), and on stop we accept what the kernel already queued in each backlog
    before closing it, so no connection the kernel accepted is reset. The caller owns
    ``listeners``.
    """

    def __init__(self, listeners: Sequence[socket.socket] | socket.socket, sessions, config, *, cpu_pool=None,
                 admission=None, on_request=None, on_last_accept=None, tls=None, handoff=None, threads=None):
        # a lone socket is taken as one listener (benchmarks/ build a LoopServer by hand with one)
        self.listeners = [listeners] if isinstance(listeners, socket.socket) else list(listeners)
        self.tls = tls  # an ssl.SSLContext: the loop's TLS transport wraps each connection
        self.sessions = sessions
        self.config = config
        self.stats = ServeStats()
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time
        self.own_threads = threads is None
        self.threads = threads if threads is not None else \
            ThreadPoolExecutor(config.threads_or(DEFAULT_BLOCKING_THREADS), thread_name_prefix="blocking")
        self.pools = Pools(self.loop.run_in_executor, self.threads, cpu_pool)
        self.admission = admission
        self.on_request = on_request
        self.on_last_accept = on_last_accept
        self.handoff = handoff
        self.courier = None  # the Courier of this drain, when it hands connections off
        self.closed_on_stop = 0  # connections closed (not handed off) once stopping
        self.channels: set[Channel] = set()
        self.answer_inline = True  # off once stopping: every request then goes through the queue
        self.stopping = False
        self.retiring = False  # close each connection once its in-flight request is answered
        self.all_closed = asyncio.Event()
        self.listening = False
        self.pending = 0  # accepted sockets whose transport is not made yet
        self.errors = AcceptErrorLog()

    # -- accepting ------------------------------------------------------------------------
    def can_accept(self) -> bool:
        open_here = len(self.channels) + self.pending
        if self.admission is not None:
            return self.admission(open_here)
        return not self.config.max_conns or open_here < self.config.max_conns

    def start_listening(self) -> None:
        if not self.listening and not self.stopping and self.can_accept():
            self.listening = True
            for listener in self.listeners:
                self.loop.add_reader(listener.fileno(), self._accept_some, listener)

    def stop_listening(self) -> None:
        if self.listening:
            self.listening = False
            for listener in self.listeners:
                self.loop.remove_reader(listener.fileno())

    def _accept_some(self, listener, limit: int | None = None) -> None:
        ok = accept_some(listener, self._start, self.errors, room=self.can_accept,
                         **({"limit": limit} if limit else {}))
        if not ok:
            self.stop_listening()
            self.loop.call_later(ACCEPT_BACKOFF_SECONDS, self.start_listening)
        elif not self.can_accept():
            self.stop_listening()

    def _start(self, sock, peer) -> None:
        self.pending += 1
        self.loop.create_task(self._adopt(sock, peer))

    async def _adopt(self, sock, peer) -> None:
        try:
            if self.tls is None:
                await self.loop.connect_accepted_socket(lambda: Channel(self), sock)
            else:  # the handshake, bounded by --request-timeout, before the Channel is made
                await self.loop.connect_accepted_socket(lambda: Channel(self), sock, ssl=self.tls,
                                                        ssl_handshake_timeout=self.config.request_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            if self.tls is None:
                log.info("connection setup failed: %s", exc)
            else:  # a connection that ended on an error, logged and counted by its session as elsewhere
                session = self.sessions.make_session(peer)
                session.log_error(handshake_failed(exc, self.config.request_timeout).strerror)
                session.finish()
                self.stats.add_session(session)
            sock.close()
        finally:
            self.pending -= 1
        if not self.can_accept():
            self.stop_listening()

    def adopt(self, sock) -> None:
        """A connection another worker handed off: served as if just accepted (a Channel, a new
        session, the timeouts; counted in ``--max-conns``: it left the sender's count as it joins
        ours, so a move never makes the total grow and is not refused)."""
        try:
            peer = sock.getpeername()
        except OSError:  # the client left while it travelled
            sock.close()
            return
        self._start(sock, peer)

    def wind_down(self, channel: Channel) -> None:
        """On a stop: hand the connection off once idle if this drain does, else finish and close."""
        if self.courier is not None:
            channel.hand_off_when_idle()
        else:
            channel.stop()

    def hand_off(self, channel: Channel) -> None:
        """Pass an idle channel's socket on: our transport goes (no FIN: the descriptor lives on
        in the courier's copy until the target holds its own); no other worker: close it."""
        if not self.courier.targets():
            channel.give_up_hand_off()
            return
        fd = os.dup(channel.transport.get_extra_info("socket").fileno())
        channel.handed_off = True
        channel.transport.abort()  # close(), never shutdown(): the connection itself stays up
        self.courier.send(fd)

    def retire_connections(self) -> None:
        """From now on, close each connection once its in-flight request is answered (the hybrid
        engine's ``--max-requests``: the worker is on its way out)."""
        self.retiring = True
        for channel in list(self.channels):
            channel.retire()

    def connection_closed(self, channel: Channel) -> None:
        self.channels.discard(channel)
        if self.stopping and not channel.handed_off:
            self.closed_on_stop += 1
        self.start_listening()
        if self.stopping and not self.channels:
            self.all_closed.set()

    # -- serving ----------------------------------------------------------------------------
    async def serve(self, stop: asyncio.Event, ready=None) -> ServeStats:
        """Serve until ``stop`` is set, then drain; returns the counts."""
        for listener in self.listeners:
            listener.setblocking(False)
        period = deadlines.sweep_period(self.config)
        self.loop.call_later(period, self._sweep, period)
        await self.sessions.open_service_async()  # on this loop, before accepting (an app's startup)
        self.start_listening()
        if ready is not None:
            ready()
        await stop.wait()
        await self._drain()
        await self.sessions.close_service_async()
        return self.stats

    def _sweep(self, period: float) -> None:
        now = self.loop.time()
        for channel in list(self.channels):
            channel.check_timeouts(now)
        self.loop.call_later(period, self._sweep, period)

    async def _drain(self) -> None:
        config = self.config
        self.stopping = True
        self.answer_inline = False
        self.stop_listening()
        # Connections the kernel accepted but we have not: take them in, so they are served.
        for listener in self.listeners:
            self._accept_some(listener, limit=config.backlog)
        if self.on_last_accept is not None:
            self.on_last_accept()
        if self.handoff is not None and self.tls is None:
            self.courier = self.handoff()
        for _ in range(3):  # let requests already read by the loop reach their channel
            await asyncio.sleep(0)
        for channel in list(self.channels):
            self.wind_down(channel)
        started = self.loop.time()
        if self.channels or self.pending:
            try:
                await asyncio.wait_for(self.all_closed.wait(), config.grace)
            except asyncio.TimeoutError:
                log.warning("grace period of %.1fs over: closing %d connections still busy",
                            config.grace, len(self.channels))
                for channel in list(self.channels):
                    channel.transport.abort()
                await asyncio.sleep(0)
        if self.courier is not None:
            await self.courier.finish(config.grace - (self.loop.time() - started))
        if self.own_threads:
            self.threads.shutdown(wait=False, cancel_futures=True)


def loop_stop_event(loop: asyncio.AbstractEventLoop, stop) -> asyncio.Event:
    """An ``asyncio.Event`` set when ``stop`` (a :class:`multiserve.stop.Stop`) is, from any thread
    or a signal handler. The loop watches the stop's pipe so that a signal wakes it."""
    event = asyncio.Event()

    def on_readable():
        stop.drain()
        if stop.is_set():
            loop.remove_reader(stop.fileno())
            event.set()

    def wake():  # on the thread that set the stop
        try:
            loop.call_soon_threadsafe(on_readable)
        except RuntimeError:  # the loop saw the pipe first, drained and was closed meanwhile
            pass

    loop.add_reader(stop.fileno(), on_readable)
    stop.add_callback(wake)
    return event


class AsyncioEngine(Engine):
    name = "asyncio"

    def serve(self, listeners, sessions, *, ready, stop):
        loop = new_event_loop(self.config.uvloop)
        asyncio.set_event_loop(loop)
        log.debug("event loop: %s", loop_name(loop))
        try:
            return loop.run_until_complete(self._main(listeners, sessions, ready, stop))
        finally:
            loop.close()

    async def _main(self, listeners, sessions, ready, stop):
        loop = asyncio.get_running_loop()
        server = LoopServer(listeners, sessions, self.config, tls=self.tls)
        return await server.serve(loop_stop_event(loop, stop), ready=ready)
