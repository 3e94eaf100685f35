"""``hybrid``: processes for the cores, threads for blocking calls, coroutines for the connections.

A supervisor (:class:`~multiserve.supervisor.Arbiter`) forks ``--workers`` workers and keeps them
alive (replaces the dead and the stuck, reloads on SIGHUP, drains on SIGTERM). Each worker runs
the asyncio engine's :class:`~.asyncio_engine.LoopServer` on its own loop (uvloop when
installed): blocking calls go to its thread pool (``--threads``), CPU-bound ones to its own
process pool (``--cpu-workers`` processes per worker), so the loop keeps answering light requests
while heavy ones run.

Listening: by default the supervisor's sockets (one per ``--bind``) are shared by every worker
(one accept queue each: a connection waiting in it survives any one worker's exit, so a reload
refuses nothing). With ``--reuse-port`` each worker binds its own SO_REUSEPORT socket per
address (the kernel spreads connections over them) and the supervisor keeps only a bound,
non-listening socket per address that reserves the port. A retiring ``--reuse-port`` worker
accepts its whole backlogs and closes its sockets at once, then drains; a connection the kernel
queues in the microseconds between that last accept and the close is reset (Linux migrates it
instead when ``net.ipv4.tcp_migrate_req`` is 1).

On the shared socket the worker already running wins every accept race, so workers publish their
open connections in the shared slot table and one far above the least-loaded leaves new
connections to it (:class:`Admission`). ``--max-conns`` counts every worker's connections from
the same table, without a lock: connections arriving at the same instant on different workers
can pass it by at most ``workers - 1``.

Hand-off (:mod:`.handoff`): a worker drained while others keep serving (the old generation of a
SIGHUP once the new one accepts, SIGTTOU's oldest, a ``--max-requests`` recycle once its
successor accepts) reads no new request, answers those in flight, and passes each connection,
once idle, to a live worker over a unix socket (SCM_RIGHTS): the client's TCP connection never
closes. A connection not idle within ``--grace`` is closed as before; a TLS connection cannot
move (its TLS state is in this process): it is closed after its reply, as before. When the
whole server stops, nothing is handed off.
"""
from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import multiprocessing
import os
import random
import signal
import socket
import time
from concurrent.futures import ProcessPoolExecutor

from ..session import ServiceStartError
from ..sockets import address_of, bind_listener
from ..stop import Stop, stop_on_signals
from ..supervisor import BOOT_ERROR, Arbiter
from .asyncio_engine import LoopServer, loop_stop_event
from .base import Engine, ServeStats
from .handoff import Courier, Inbox, inbox_path, new_namespace
from .loops import loop_name, new_event_loop

log = logging.getLogger(__name__)

# --max-requests jitter: up to a tenth more, so workers started together do not all recycle at
# once (gunicorn leaves the amount to --max-requests-jitter; a tenth is our default).
JITTER_FRACTION = 0.1
# A worker that stopped accepting looks again this often (no cross-process wake-up; costs nothing
# while it accepts): at --max-conns, every 10 ms; when it left new connections to a less loaded
# worker, every 1 ms (at 10 ms, 10,000 connections arriving at once took 0.4 s longer to reach
# two workers than to reach a lone asyncio process).
ADMISSION_RETRY = 0.01
BALANCE_RETRY = 0.001
# Balance on the shared socket: connections a worker may hold above the least-loaded one before
# it leaves new ones to it (2: a burst alternates between workers; 0 would refuse on every tie).
BALANCE_SLACK = 2
# ... or a sixteenth of the least-loaded one's count, whichever is more: thousands arriving at once
# (the C10K check) are then taken in long runs, not three at a time between two pauses.
BALANCE_SHIFT = 4
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class HybridEngine(Engine):
    name = "hybrid"

    def serve(self, listeners, sessions, *, ready, stop):
        config = self.config
        reserved = []
        inboxes = new_namespace()  # the names of the workers' hand-off inboxes
        if config.reuse_port:
            addresses = [address_of(listener) for listener in listeners]
            try:
                for host, port in addresses:
                    reserved.append(reserve_port(host, port))
            except BaseException:
                for sock in reserved:
                    sock.close()
                raise
            for listener in listeners:
                listener.close()  # it listens, and nobody would accept what the kernel queued on it
            worker = HybridWorker(config, sessions, None, addresses, reserved, self.tls, inboxes)
        else:
            worker = HybridWorker(config, sessions, list(listeners), None, [], self.tls, inboxes)
        arbiter = Arbiter(worker.run, stop=stop, workers=config.workers, worker_timeout=config.worker_timeout,
                          grace=config.grace)
        # As the process engine does: what the supervisor made so far is out of the collector's
        # reach, so a worker's collections do not write to (and so copy) the pages it shares.
        gc.freeze()
        try:
            arbiter.run(ready)
        finally:
            for sock in reserved:
                sock.close()
        return ServeStats(*arbiter.totals)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: the port stays ours while workers come and
    go, and the kernel sends it no connection. No SO_REUSEADDR: Linux refuses a second bind
    next to a non-listening socket when both set it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class HybridWorker:
    """One worker process: built in the supervisor, ``run(context)`` runs in the forked child."""

    def __init__(self, config, sessions, listeners, addresses, reserved, tls=None, inboxes=None):
        self.config = config
        self.inboxes = inboxes  # the prefix of the workers' hand-off socket names
        self.tls = tls  # the supervisor's ssl.SSLContext, inherited by the fork
        self.sessions = sessions
        self.listeners = listeners  # shared; None with --reuse-port
        self.addresses = addresses  # the (host, port) list each --reuse-port worker binds
        self.reserved = reserved  # the supervisor's port reservations (--reuse-port)

    def run(self, context) -> int:
        config = self.config
        for sock in self.reserved:
            sock.close()  # the supervisor's, not ours
        listeners = self.listeners if self.listeners is not None else []
        try:
            pool = self._cpu_pool()  # first: while this process has a single thread (fork-safe)
            if self.listeners is None:
                for host, port in self.addresses:
                    listeners.append(bind_listener(host, port, config.backlog, reuse_port=True))
            inbox = self._inbox(context.index)
            self.sessions.open_service()
        except Exception as exc:
            log.error("worker %d cannot start: %s: %s", os.getpid(), type(exc).__name__, exc)
            for listener in listeners:
                listener.close()
            return BOOT_ERROR
        stats = ServeStats()
        loop = new_event_loop(config.uvloop)
        asyncio.set_event_loop(loop)
        stop = Stop()
        try:
            with stop_on_signals(stop):
                stats = loop.run_until_complete(self._serve(context, listeners, pool, stop, inbox))
        except ServiceStartError as exc:  # open_async on the loop (an app's startup) failed
            log.error("worker %d cannot start: %s", os.getpid(), exc)
            return BOOT_ERROR
        finally:
            if inbox is not None:
                inbox.close()
            loop.close()
            for listener in listeners:
                listener.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            self.sessions.close_service()
            context.slot.publish(stats)
        log.info("worker %d stopped: %s", os.getpid(), stats.summary())
        return 0

    def _inbox(self, index: int):
        """This worker's hand-off inbox, or None: an inbox the kernel refuses costs the hand-off
        (connections close on retirement, as before), never the worker."""
        if not self.inboxes:
            return None
        try:
            return Inbox(inbox_path(self.inboxes, index), None)
        except OSError as exc:
            log.warning("worker %d: no connection hand-off: %s", os.getpid(), exc)
            return None

    def _cpu_pool(self):
        """The worker's process pool for CPU-bound calls, started now, or None if not needed.

        With the "fork" start method the first ``submit`` starts every process at once, before
        this worker has any thread (forking a threaded process can copy a held lock).
        """
        if not (self.sessions.plan.wants_cpu_pool and self.config.cpu_workers > 0):
            return None
        inherited = list(self.listeners or ())  # "fork": passed as is
        pool = ProcessPoolExecutor(self.config.cpu_workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_cpu_process_init, initargs=(inherited,))
        pool.submit(int).result()
        return pool

    async def _serve(self, context, listeners, pool, stop, inbox) -> ServeStats:
        config = self.config
        loop = asyncio.get_running_loop()
        shared = self.listeners is not None
        slot = context.slot
        can_hand_off = inbox is not None and self.tls is None
        budget = RequestBudget(config.max_requests, slot, hand_off=can_hand_off) if config.max_requests else None
        admission = Admission(context, config.max_conns, shared_socket=shared, budget=budget) \
            if shared or config.max_conns or budget else None
        couriers = []

        def courier():
            """At the drain's start: hand off only if other workers keep serving (the supervisor
            says so in ``slot.handoff``; not when the whole server stops)."""
            if not slot.handoff:
                return None
            log.info("worker %d retiring: handing off its %d connections once idle", os.getpid(),
                     len(server.channels))
            couriers.append(Courier(loop, self.inboxes, context))
            return couriers[0]

        def leave_groups():  # our own SO_REUSEPORT sockets: leave each group right after the last accept
            for listener in listeners:
                listener.close()

        server = LoopServer(listeners, self.sessions, config, cpu_pool=pool, admission=admission,
                            on_request=budget, on_last_accept=None if shared else leave_groups, tls=self.tls,
                            handoff=courier if can_hand_off else None)
        if admission is not None:
            admission.server = server
        if budget is not None:
            budget.server = server
        if inbox is not None:
            def adopt(sock):
                self.sessions.connections_moved("adopted")
                server.adopt(sock)

            inbox.adopt = adopt
            inbox.start(loop)

        def beat():
            slot.beat_now()
            slot.publish(server.stats)
            slot.open = len(server.channels)  # fresh even when no accept asked (a close)
            if context.supervisor_gone():
                log.warning("worker %d: supervisor %d is gone: stopping", os.getpid(), context.supervisor_pid)
                stop.set("supervisor gone")
            loop.call_later(context.heartbeat_interval, beat)

        def ready():
            slot.ready = 1
            log.info("worker %d accepts (%s loop)", os.getpid(), loop_name(loop))

        beat()
        stats = await server.serve(loop_stop_event(loop, stop), ready=ready)
        _report_drain(slot, server, couriers[0] if couriers else None, inbox, self.sessions)
        return stats


def _report_drain(slot, server, courier, inbox, sessions) -> None:
    """The retirement's one log line, and its counts: in the slot (the supervisor's exit line
    reads them there) and in the metrics (adoptions are counted as they happen)."""
    moved = courier.moved if courier is not None else 0
    slot.handed_off, slot.adopted, slot.closed_on_stop = moved, inbox.adopted if inbox else 0, server.closed_on_stop
    sessions.connections_moved("handed_off", moved)
    sessions.connections_moved("closed", server.closed_on_stop + (courier.lost if courier is not None else 0))
    if courier is not None:
        log.info("worker %d handed off %d connections (%s), closed %d (%d with no worker left to take them)",
                 os.getpid(), moved, courier.where(), server.closed_on_stop + courier.lost, courier.lost)
    elif server.closed_on_stop:
        log.info("worker %d closed %d connections on stop%s", os.getpid(), server.closed_on_stop,
                 " (TLS: they cannot be handed off)" if slot.handoff else "")


class RequestBudget:
    """``on_request`` for ``--max-requests``: once the budget is spent, the worker asks the
    supervisor for a successor and accepts no more connections. With hand-off it serves its
    connections on until the successor accepts and the supervisor drains it, which hands each
    to the successor (or another worker) once idle: the clients never notice. Without (TLS), it
    closes each connection as soon as its in-flight request is answered, so it exits within
    about ``--grace`` instead of serving its persistent clients on (they reconnect)."""

    def __init__(self, limit: int, slot, hand_off: bool = False):
        self.slot = slot
        self.hand_off = hand_off
        self.left = limit + random.randint(0, int(limit * JITTER_FRACTION))
        self.limit = self.left
        self.server = None  # the worker's LoopServer, set once made

    @property
    def spent(self) -> bool:
        return self.left <= 0

    def __call__(self, n: int) -> None:
        self.left -= n
        if self.left <= 0 and not self.slot.recycle:
            self.slot.recycle = 1
            if self.hand_off:
                log.info("worker %d served %d requests (--max-requests): asking to be replaced; its "
                         "connections go to the successor", os.getpid(), self.limit)
                return
            log.info("worker %d served %d requests (--max-requests): asking to be replaced, "
                     "closing each connection after its reply", os.getpid(), self.limit)
            if self.server is not None:
                self.server.retire_connections()


class Admission:
    """``LoopServer.admission`` of a worker: when may it accept one more connection?

    * ``--max-conns`` counts every worker's connections (the module docstring says how exactly).
    * Balance, on the shared socket: every worker's loop wakes for a new connection, but the one
      already running wins the accept race (64 simultaneous connects all landed on one of two
      workers). So a worker holding more than BALANCE_SLACK connections (or a sixteenth) above
      the least-loaded live worker (one whose loop beat within two heartbeats) leaves the next
      ones to it.
    * Hand-off, on the shared socket: once draining while other workers keep serving
      (``slot.handoff``), or once its ``--max-requests`` budget is spent, accept nothing more, so
      the backlog goes to the workers that stay.

    A refusal stops the worker's accepting (``LoopServer.stop_listening``); it looks again
    ADMISSION_RETRY (limit) or BALANCE_RETRY (balance) later, as no other process can wake it.
    """

    def __init__(self, context, max_conns: int, shared_socket: bool, budget=None):
        self.context = context
        self.server = None  # the worker's LoopServer, set once made
        self.max_conns = max_conns
        self.balance = shared_socket
        self.budget = budget
        self.retry_armed = False

    def __call__(self, open_here: int) -> bool:
        context = self.context
        context.slot.open = open_here
        if self.server.stopping:
            return not (self.balance and context.slot.handoff) and self._under_limit(open_here)
        if self.balance and self.budget is not None and self.budget.spent:
            return False  # the supervisor's successor (or the other workers) take new clients
        if not self._under_limit(open_here):
            return self._later(ADMISSION_RETRY)
        if self.balance:
            since = time.monotonic() - 2 * context.heartbeat_interval
            least = context.table.least_open(skip=context.index, beat_since=since)
            if least is not None and open_here > least + max(BALANCE_SLACK, least >> BALANCE_SHIFT):
                return self._later(BALANCE_RETRY)
        return True

    def _under_limit(self, open_here: int) -> bool:
        if not self.max_conns:
            return True
        return open_here + self.context.table.open_connections(skip=self.context.index) < self.max_conns

    def _later(self, delay: float) -> bool:
        if not self.retry_armed:
            self.retry_armed = True
            self.server.loop.call_later(delay, self._retry)
        return False

    def _retry(self) -> None:
        self.retry_armed = False
        if not self.server.stopping:
            self.server.start_listening()  # it asks us again


def _cpu_process_init(inherited_sockets) -> None:
    """In each CPU process: die with the worker (even a kill -9'd one), leave Ctrl-C to the
    worker, and close the listening sockets we inherited (they must not outlive the worker)."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sock in inherited_sockets:
        sock.close()
