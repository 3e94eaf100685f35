"""``gevent``: a greenlet per connection, on the same blocking loop as the thread engine.

This is the only module that imports gevent. Monkey-patching is process-wide, so it happens only
in the process that runs this engine: ``python -m multiserve``/the ``multiserve`` script patch
first thing when ``--engine gevent`` is on the command line (before threading or socket are
imported there), and ``serve`` patches again (a no-op then) for embedders.

Timeouts: a socket timeout would start and stop a timer on every wait (measured: a quarter of
gevent's throughput), so a watchdog greenlet owns the idle timeout instead, raising
:class:`IdleTimeout` into a connection idle in ``recv`` (or stuck in a send) for too long; only a
partial request switches that connection to a socket timeout.
"""
from __future__ import annotations

import logging
import time

from ..session import run_coroutine_here
from .acceptor import ACCEPT_BACKOFF_SECONDS, AcceptErrorLog
from .base import Engine, ServeStats
from .channels import Channel, Channels
from .connection_loop import ConnectionLoop

log = logging.getLogger(__name__)

# Threads for coroutine services (--threads): the asyncio engine's default for its blocking pool.
DEFAULT_COROUTINE_THREADS = 16
# A connection's turn ends (ConnectionLoop.yield_turn: after engines.base.PIPELINE_QUANTUM
# pipelined requests) with a sleep this short: any positive sleep is a timer, and the loop polls
# every socket before it fires, so each connection with work gets a turn in between. Not
# sleep(0), which runs up to 50 other ready greenlets before polling (a polite client waited
# for 50 quanta of the flooders: tests/test_fairness.py), nor gevent.idle(), which waits while
# any socket is ready (a busy client then starved the pipelining ones).
TURN_SLEEP = 1e-6


def patch() -> None:
    """Apply gevent's monkey-patching to this process (idempotent)."""
    try:
        from gevent import monkey
    except ImportError:
        raise RuntimeError("the gevent engine needs gevent: pip install gevent") from None
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


class IdleTimeout(TimeoutError):
    """Raised into a connection by the watchdog when its wait is too long."""


class WatchdogTimeouts:
    """ConnectionLoop's timeouts under gevent: the watchdog times idle waits and sends (from
    ``last_active``, read once per reply, never per receive); a partial request is timed by a
    socket timeout."""

    def __init__(self, current):
        self.current = current

    def opened(self, sock, channel: Channel) -> None:
        sock.settimeout(None)
        channel.owner = self.current()
        channel.watched = True

    def request_begun(self, sock, channel: Channel, left: float) -> None:
        channel.watched = False
        sock.settimeout(max(left, 0.001))

    def request_done(self, sock, channel: Channel) -> None:
        channel.watched = True
        sock.settimeout(None)

    def sender(self, sock, channel: Channel):
        def send(data: bytes) -> None:
            channel.sending = True
            channel.last_active = time.monotonic()
            try:
                sock.sendall(data)
            finally:
                channel.sending = False
        return send


def watch_idle(channels: Channels, idle_timeout: float, now: float, raise_in) -> None:
    """One watchdog pass: raise IdleTimeout into each connection waiting longer than the idle
    timeout in ``recv`` or in a send (``raise_in(owner, exc_type)``)."""
    for channel in channels.snapshot():
        if channel.watched and (channel.idle or channel.sending) and now - channel.last_active >= idle_timeout:
            channel.watched = False  # once
            raise_in(channel.owner, IdleTimeout)


def watchdog_period(idle_timeout: float) -> float:
    """A quarter of the timeout, at most a second: a timeout fires at most 25% late."""
    return min(1.0, idle_timeout / 4)


class GeventEngine(Engine):
    name = "gevent"

    def serve(self, listeners, sessions, *, ready, stop):
        patch()
        import gevent
        import gevent.lock
        import gevent.socket

        listeners = [listener if isinstance(listener, gevent.socket.socket)  # made before patching (embedding)
                     else gevent.socket.socket(listener.family, listener.type, fileno=listener.detach())
                     for listener in listeners]
        config = self.config
        # A coroutine service runs on an asyncio loop of an OS thread of gevent's pool: asyncio
        # knows one running loop per OS thread, and every greenlet shares this one.
        threadpool = gevent.get_hub().threadpool
        threadpool.maxsize = config.threads_or(DEFAULT_COROUTINE_THREADS)
        sessions.run_coroutine = lambda coro: threadpool.apply(run_coroutine_here, (coro,))
        stats, channels = ServeStats(), Channels()
        serve_connection = ConnectionLoop(sessions, config, stats, channels, WatchdogTimeouts(gevent.getcurrent),
                                          self.tls, yield_turn=lambda: gevent.sleep(TURN_SLEEP))
        slots = gevent.lock.BoundedSemaphore(config.max_conns) if config.max_conns else None

        def run(sock, peer):
            try:
                serve_connection(sock, peer)
            finally:
                if slots is not None:
                    slots.release()

        # With several listeners and --max-conns, an accepting greenlet takes a slot only once its
        # listener has a client waiting: one holding a slot while idle on its listener would
        # keep the others' clients waiting though the server is under the limit.
        wait_first = slots is not None and len(listeners) > 1

        def accept_forever(listener):
            errors = AcceptErrorLog()
            while True:
                if wait_first:
                    gevent.socket.wait_read(listener.fileno())
                if slots is not None:
                    slots.acquire()  # past --max-conns, new clients wait in the backlog
                try:
                    sock, peer = listener.accept()
                except OSError as exc:
                    if slots is not None:
                        slots.release()
                    if errors.failed(exc):
                        gevent.sleep(ACCEPT_BACKOFF_SECONDS)
                        continue
                    if isinstance(exc, ConnectionAbortedError):
                        continue
                    raise
                errors.succeeded()
                gevent.spawn(run, sock, peer)

        def watchdog():
            idle, period = config.idle_timeout, watchdog_period(config.idle_timeout)
            raise_in = lambda owner, exc: owner.kill(exc, block=False)  # noqa: E731
            while True:
                gevent.sleep(period)
                watch_idle(channels, idle, time.monotonic(), raise_in)

        acceptors = [gevent.spawn(accept_forever, listener) for listener in listeners]
        watcher = gevent.spawn(watchdog)
        ready()
        while not stop.is_set():  # the stop's pipe wakes the hub, signals included
            gevent.socket.wait_read(stop.fileno())
            stop.drain()
        gevent.killall(acceptors)
        watcher.kill()
        channels.drain(config.grace)
        return stats
