"""``multiloop``: threads x event loops in one process, the seed's "threads, then coroutines inside
them" without the processes.

``--workers`` threads (one per core by default) each run their own event loop (uvloop when
installed, see ``engines.loops``) with the asyncio engine's :class:`~.asyncio_engine.LoopServer`
over a share of the connections. Blocking calls, and CPU-bound ones (as the asyncio engine runs
them: there is no process pool), go to one thread pool shared by every loop (``--threads``,
default 16).

On a GIL build this gains nothing for CPU: the loops take turns holding one lock, so ``cpu:1``
runs as on one loop, and the extra loops only cost switches. On a free-threaded build
(``sys._is_gil_enabled()`` False) the loops and the pool threads run Python at the same time, as
the hybrid engine's processes do, but with one copy of the service and no fork.

Listening: the listeners (one, or one per ``--bind``) are all accepted by the first loop (the
calling thread), which hands each connection to the next loop in turn (``call_soon_threadsafe``). Measured against one
SO_REUSEPORT socket per loop (docs/free-threading.md has the commands): new connections cost
about 5% more server CPU (a cross-thread wake each; 67-76 against 64-67 ms per 1,000
connect-request-close cycles, 2 loops) and nothing once connected; in exchange the split is
exact (16 connections: 8 and 8 every time, where the kernel's hash gave one loop 4 to 12 in ten
trials), every kind of listener works (unix sockets, ``fd://``, socket activation), a stop
resets nothing the kernel queued (one accept queue, drained by one loop), and ``--max-conns``
is tested by one acceptor, so it is exact.

Stop: on SIGTERM the first loop stops accepting, accepts what the backlog holds and hands it
out, then tells the other loops to stop; each drains its own connections within ``--grace``
(the asyncio engine's drain). A service's ``open_async`` (an ASGI app's lifespan) runs once, on
the first loop, before anything is accepted, and ``close_async`` after every loop has drained:
an object the startup makes that is bound to its event loop (a connection pool) must not be
used from the other loops.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from .asyncio_engine import DEFAULT_BLOCKING_THREADS, LoopServer, loop_stop_event
from .base import Engine, ServeStats
from .loops import loop_name, new_event_loop

log = logging.getLogger(__name__)


def gil_enabled() -> bool:
    """Whether the GIL is on now (always, before CPython 3.13)."""
    return getattr(sys, "_is_gil_enabled", lambda: True)()


class Share:
    """What the loops share: the servers (the accepting one first), the round-robin turn, and
    ``--max-conns``'s one count. A connection moves from ``in_transit`` (accepted, handed to
    another loop) to that loop's ``pending`` (being adopted) to its ``channels`` (served), each
    step added before the previous is taken away; the count reads them in that order, so it may
    be one high for an instant, never short."""

    def __init__(self, max_conns: int):
        self.max_conns = max_conns
        self.servers: list[LoopServer] = []
        self.lock = threading.Lock()
        self.in_transit = 0
        self.turns = None

    def next_server(self) -> LoopServer:
        if self.turns is None:
            self.turns = itertools.cycle(self.servers)
        return next(self.turns)

    def open_connections(self) -> int:
        with self.lock:
            count = self.in_transit
        return count + sum(server.pending + len(server.channels) for server in self.servers)

    def admits(self, _open_here: int) -> bool:
        """The accepting loop's admission: every loop's connections against ``--max-conns``."""
        return not self.max_conns or self.open_connections() < self.max_conns

    def hand_over(self, server: LoopServer, sock, peer) -> None:
        """Give an accepted connection to ``server``'s loop (from the accepting loop's thread)."""
        with self.lock:
            self.in_transit += 1
        server.loop.call_soon_threadsafe(self._adopt, server, sock, peer)

    def _adopt(self, server: LoopServer, sock, peer) -> None:  # on the receiving loop
        server._start(sock, peer)  # counted there now (pending)
        with self.lock:
            self.in_transit -= 1


class AcceptingServer(LoopServer):
    """The first loop's server: accepts for every loop, serves its own turn, and closes the
    service once the other loops (``others_done``: their threads' futures) have drained."""

    def __init__(self, listeners, sessions, config, *, share: Share, others_done, **hooks):
        super().__init__(listeners, sessions, config, admission=share.admits, **hooks)
        self.share = share
        self.others_done = others_done

    def _start(self, sock, peer) -> None:
        server = self.share.next_server()
        if server is self:
            super()._start(sock, peer)
        else:
            self.share.hand_over(server, sock, peer)

    async def _drain(self) -> None:
        await super()._drain()
        await asyncio.gather(*(asyncio.wrap_future(done) for done in self.others_done),
                             return_exceptions=True)


class ServingServer(LoopServer):
    """Another loop's server: never listens (the first loop accepts for it, so its admission is
    always no); a connection it closes may leave room under ``--max-conns``, so it wakes the
    accepting loop to look again."""

    def __init__(self, listeners, sessions, config, *, share: Share, **hooks):
        super().__init__(listeners, OpenedElsewhere(sessions), config, admission=lambda _open: False, **hooks)
        self.share = share

    def connection_closed(self, channel) -> None:
        super().connection_closed(channel)
        if self.share.max_conns:
            accepting = self.share.servers[0]
            try:
                accepting.loop.call_soon_threadsafe(accepting.start_listening)
            except RuntimeError:  # its loop is closed: the server is stopping
                pass


class OpenedElsewhere:
    """The session factory as a loop other than the first sees it: the service's ``open_async``
    and ``close_async`` run once, on the first loop."""

    def __init__(self, sessions):
        self.make_session = sessions.make_session
        self.plan = sessions.plan

    async def open_service_async(self) -> None:
        pass

    async def close_service_async(self) -> None:
        pass


class LoopThread(threading.Thread):
    """Runs one loop other than the first. ``made`` resolves to its server once built on its loop
    (the accepting loop hands connections to it from then on), ``done`` to its counts."""

    def __init__(self, index: int, build, use_uvloop: bool):
        super().__init__(name=f"loop-{index}", daemon=True)
        self.build = build  # build() -> ServingServer, called on this thread's running loop
        self.use_uvloop = use_uvloop
        self.made: Future = Future()
        self.done: Future = Future()
        self.stop_event: asyncio.Event | None = None

    def run(self) -> None:
        loop = new_event_loop(self.use_uvloop)
        asyncio.set_event_loop(loop)
        try:
            self.done.set_result(loop.run_until_complete(self._serve()))
        except BaseException as exc:
            if not self.made.done():
                self.made.set_exception(exc)
            self.done.set_exception(exc)
        finally:
            loop.close()

    async def _serve(self) -> ServeStats:
        server = self.build()
        self.stop_event = asyncio.Event()
        self.made.set_result(server)
        return await server.serve(self.stop_event)

    def stop(self) -> None:
        """From any thread: drain and end (once every connection handed to it is adopted, as
        ``call_soon_threadsafe`` keeps order)."""
        if not self.made.done() or self.made.exception() is not None:
            return
        try:
            self.made.result().loop.call_soon_threadsafe(self.stop_event.set)
        except RuntimeError:  # its loop has ended already
            pass


class MultiloopEngine(Engine):
    name = "multiloop"

    def serve(self, listeners, sessions, *, ready, stop):
        config = self.config
        pool_size = config.threads_or(DEFAULT_BLOCKING_THREADS)
        threads = ThreadPoolExecutor(pool_size, thread_name_prefix="blocking")
        share = Share(config.max_conns)

        def build() -> ServingServer:
            return ServingServer(listeners, sessions, config, share=share, threads=threads, tls=self.tls)

        others = [LoopThread(index, build, config.uvloop) for index in range(1, config.workers)]
        loop = new_event_loop(config.uvloop)
        asyncio.set_event_loop(loop)
        try:
            for thread in others:
                thread.start()
            share.servers = [thread.made.result() for thread in others]  # the accepting one goes first
            log.info("multiloop: %d %s loops on threads, blocking and CPU-bound calls on %d threads (GIL %s)",
                     config.workers, loop_name(loop), pool_size, "on" if gil_enabled() else "off")
            loop.run_until_complete(self._accept(listeners, sessions, share, threads, others, ready, stop))
        finally:
            for thread in others:
                thread.stop()
            for thread in others:
                thread.join()
            loop.close()
            threads.shutdown(wait=False, cancel_futures=True)
        for index, server in enumerate(share.servers):
            log.info("loop %d served: %s", index, server.stats.summary())
        totals = ServeStats()
        for server in share.servers:
            totals.add(*server.stats.as_tuple())
        for thread in others:
            thread.done.result()  # a loop that failed fails the serve
        return totals

    async def _accept(self, listeners, sessions, share, threads, others, ready, stop) -> ServeStats:
        loop = asyncio.get_running_loop()

        def stop_others():  # after the final accept: every connection is handed out by now
            for thread in others:
                thread.stop()

        server = AcceptingServer(listeners, sessions, self.config, share=share, threads=threads, tls=self.tls,
                                 others_done=[thread.done for thread in others], on_last_accept=stop_others)
        share.servers.insert(0, server)
        return await server.serve(loop_stop_event(loop, stop), ready=ready)
