"""``asyncio``: coroutines on one event loop (uvloop when installed, ``--no-uvloop`` to opt out).

Connections are ``asyncio.Protocol`` objects rather than streams: a request that a cheap,
non-blocking service answers (``upper``, ``echo``) is answered inside ``data_received`` with no
task, future or buffer copy, which is where the stream API spends its time. Anything else goes
through one worker coroutine per connection, so replies stay in request order: coroutine services
are awaited, blocking ones run on a thread pool (``--threads``, default 16), CPU-bound ones on the
process pool when the engine has one (``hybrid``) and on the thread pool otherwise.

Timeouts cost nothing per request and no timer per connection: ``data_received`` records the time
of the last byte, and one sweeper per process (every quarter of the shortest timeout, at most a
second) closes the connections past a deadline. Measured with 2,000 idle connections (RSS): a
timer each (and an eager ``conn.state``) made one 2.5 KiB; without them it is 1.7 KiB.
The ``hybrid`` engine's workers reuse this module's :func:`serve_forever`.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

from ..protocol import error_reply
from ..session import CallPlan, Session
from .base import LINGER_BYTES, LINGER_SECONDS, AcceptErrorLog, Engine, describe_peer
from .loops import loop_name, new_event_loop

log = logging.getLogger("multiserve")

# Backpressure: stop reading from a client whose unsent replies pass 64 KiB (the high-water mark
# the issue names, and asyncio's own default), or whose queued requests pass this many.
WRITE_HIGH_WATER = 64 * 1024
QUEUE_HIGH_WATER = 1024
DEFAULT_BLOCKING_THREADS = 16
# On stop, how long a connection that has sent nothing yet may take to send its first request:
# far above a loopback client's connect-to-send gap even on a loaded 2-core machine (scheduler
# slices are milliseconds), small against --grace's 10 s default.
FIRST_REQUEST_GRACE = 0.5
IDLE_TIMEOUT = error_reply("idle timeout")
REQUEST_TIMEOUT = error_reply("request timeout")


class ServerState:
    """What every connection of one serving process shares."""

    def __init__(self, service, config, stats, *, cpu_executor=None, on_request=None):
        self.service = service
        self.plan = CallPlan(service)
        # answer in data_received: the service is cheap and we are not stopping
        self.inline = self.plan.inline
        # Optional per-request split (a mixed load): a service's ``cpu_bound_for(request) -> bool``
        # sends the requests it names where CPU-bound calls go (the hybrid engine's process pool,
        # else the thread pool), even when the service is otherwise answered inline.
        self.cpu_bound_for = getattr(service, "cpu_bound_for", None)
        self.config = config
        self.stats = stats
        self.loop = asyncio.get_running_loop()
        self.threads = ThreadPoolExecutor(config.threads_or(DEFAULT_BLOCKING_THREADS), thread_name_prefix="blocking")
        self.cpu_executor = cpu_executor or self.threads
        self.connections: set[LineProtocol] = set()
        self.stopping = False
        self.all_closed = asyncio.Event()
        self.on_close = None  # called with no argument when a connection ends
        self.on_request = on_request
        # hybrid: ``admission(open_here) -> bool`` replaces the per-process --max-conns test (the
        # limit counts every worker's connections); ``on_last_accept()`` runs right after the
        # final accept on stop (a --reuse-port worker closes its listener there, see hybrid_engine)
        self.admission = None
        self.on_last_accept = None

    def shutdown(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)


class LineProtocol(asyncio.Protocol):
    __slots__ = (
        "state", "transport", "session", "queue", "worker", "last_active", "request_started",
        "write_paused_at", "reading_paused", "closing", "error", "discarded",
    )

    def __init__(self, state: ServerState):
        self.state = state
        self.transport = None
        self.session = None
        self.queue = None
        self.worker = None
        self.request_started = None
        self.write_paused_at = None
        self.reading_paused = False
        self.closing = False  # no more requests: finish the queue, then close
        self.error = 0
        self.discarded = -1  # >= 0 while discarding input after an ERR line

    # -- life cycle ---------------------------------------------------------------------
    def connection_made(self, transport):
        state = self.state
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        try:
            self.session = Session(state.service, state.config.max_line,
                                   transport.get_extra_info("peername"), state.plan)
        except Exception as exc:
            log.error("service setup() failed: %s: %s", type(exc).__name__, exc)
            self.error = 1
            transport.abort()
            return
        state.connections.add(self)
        self.last_active = state.loop.time()
        if state.stopping:  # adopted from the backlog during a stop
            self.stop()

    def connection_lost(self, exc):
        state = self.state
        if self.worker is not None:
            self.worker.cancel()
        if exc is not None and not self.error:
            self.error = 1
            log.info("connection %s: %s", self._peer(), _reason(exc))
        session = self.session
        if session is not None:
            session.finish()
            state.stats.add(connections=1, requests=session.requests, errors=self.error)
        state.connections.discard(self)
        if state.on_close is not None:
            state.on_close()
        if state.stopping and not state.connections:
            state.all_closed.set()

    # -- reading ------------------------------------------------------------------------
    def data_received(self, data):
        if self.closing is not False or self.discarded >= 0:
            if self.discarded >= 0:
                self.discarded += len(data)
                if self.discarded > LINGER_BYTES:
                    self.transport.abort()
            return
        state = self.state
        self.last_active = now = state.loop.time()
        framer = self.session.framer
        lines = framer.feed(data)
        if lines:
            if self.worker is None and state.inline and (
                    state.cpu_bound_for is None or not any(map(state.cpu_bound_for, lines))):
                handle = self.session.handle
                if len(lines) == 1:
                    self.transport.write(handle(lines[0]))
                else:
                    self.transport.write(b"".join([handle(line) for line in lines]))
                if state.on_request is not None:
                    state.on_request(len(lines))
            else:
                self._enqueue(lines)
        if framer.failed:
            log.info("connection %s: %s", self._peer(), framer.error)
            self._finish_then(self.session.error)
        elif framer.partial:
            if self.request_started is None:
                self.request_started = now
        else:
            self.request_started = None

    def eof_received(self):
        if self.discarded >= 0:
            self.transport.close()
            return True
        last = self.session.eof()
        if last is not None and not self.closing:
            self._enqueue([last])
        self._finish_then(None)
        return True  # we close once the replies are written

    # -- the worker: one per connection, only for services that cannot answer inline --------
    def _enqueue(self, lines):
        if self.queue is None:
            self.queue = collections.deque()
        self.queue.extend(lines)
        if len(self.queue) > QUEUE_HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        if self.worker is None:
            self.worker = self.state.loop.create_task(self._work())

    async def _work(self):
        state = self.state
        plan = state.plan
        session = self.session
        loop = state.loop
        queue = self.queue
        try:
            while queue:
                line = queue.popleft()
                if plan.coroutine:
                    reply = await session.handle_async(line)
                elif plan.cpu or (state.cpu_bound_for is not None and state.cpu_bound_for(line)):
                    session.count_request()
                    reply = await loop.run_in_executor(state.cpu_executor, _call_cpu, state.service, line)
                elif plan.blocking:
                    reply = await loop.run_in_executor(state.threads, session.handle, line)
                else:
                    reply = session.handle(line)
                if self.transport.is_closing():
                    return
                self.transport.write(reply)
                self.last_active = loop.time()
                if state.on_request is not None:
                    state.on_request(1)
                if self.reading_paused and len(queue) < QUEUE_HIGH_WATER // 2 and self.write_paused_at is None:
                    self.reading_paused = False
                    self.transport.resume_reading()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a pool that broke (e.g. a CPU worker killed): one line, close
            log.error("connection %s: %s: %s", self._peer(), type(exc).__name__, exc)
            self.error = 1
            self.transport.abort()
            return
        finally:
            self.worker = None
        if self.closing:
            self._close_now()

    # -- closing ------------------------------------------------------------------------------
    def _finish_then(self, error: bytes | None):
        """No more requests: answer what is queued, then close (after ``error`` if given)."""
        self.closing = True
        if error is not None:
            self.error = 1
            self.closing = error
        if self.worker is None:
            self._close_now()

    def _close_now(self):
        error = self.closing if isinstance(self.closing, bytes) else None
        transport = self.transport
        if transport.is_closing():
            return
        if error is None:
            transport.close()  # flushes what is buffered first
            return
        # Deliver the ERR line: send it, shut down our side, discard what the client still
        # sends until it closes (bounded), then close; see engines.base.close_with_error.
        transport.write(error)
        self.discarded = 0
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self.state.loop.call_later(LINGER_SECONDS, transport.close)

    # -- timeouts (called by the sweeper) ----------------------------------------------------
    def check_timeouts(self, now: float) -> None:
        if self.transport.is_closing() or self.discarded >= 0:
            return
        config = self.state.config
        if self.write_paused_at is not None:
            if now - self.write_paused_at >= config.idle_timeout:
                log.info("connection %s: send made no progress for %.0fs (client not reading); closed",
                         self._peer(), config.idle_timeout)
                self.error = 1
                self.transport.abort()
            return
        if self.request_started is not None and now >= self.request_started + config.request_timeout:
            log.info("connection %s: request timeout", self._peer())
            self.request_started = None
            self._finish_then(REQUEST_TIMEOUT)
        elif self.worker is None and not self.closing and now >= self.last_active + config.idle_timeout:
            log.info("connection %s: idle timeout", self._peer())
            self._finish_then(IDLE_TIMEOUT)

    # -- backpressure from the transport -----------------------------------------------------
    def pause_writing(self):
        self.write_paused_at = self.state.loop.time()
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_writing(self):
        self.write_paused_at = None
        if self.reading_paused and (self.queue is None or len(self.queue) < QUEUE_HIGH_WATER // 2):
            self.reading_paused = False
            self.transport.resume_reading()

    # -- stop -----------------------------------------------------------------------------------
    def stop(self):
        """Graceful stop: finish the requests already received, then close.

        A client that has not sent a byte yet (accepted just before the stop, or from the backlog
        on stop) gets FIRST_REQUEST_GRACE to send its first request, which is answered: closing
        it at once would fail a new connection whose request is a moment away.
        """
        if self.closing:
            return
        if self.session is not None and self.session.requests == 0 and self.queue is None and self.request_started is None:
            self.state.loop.call_later(FIRST_REQUEST_GRACE, self._finish_if_open)
            return
        self._finish_then(None)

    def _finish_if_open(self):
        if not self.closing and not self.transport.is_closing():
            self._finish_then(None)

    def _peer(self) -> str:
        return describe_peer(self.session.conn.peer if self.session else None)


def sweep_period(config) -> float:
    """A quarter of the shortest timeout, at most a second: a timeout fires at most 25% late."""
    return min(1.0, config.idle_timeout / 4, config.request_timeout / 4)


def _sweep(state: ServerState, period: float) -> None:
    now = state.loop.time()
    for conn in list(state.connections):
        conn.check_timeouts(now)
    state.loop.call_later(period, _sweep, state, period)


def _call_cpu(service, line):
    return service.handle(line, None)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "reset by client"
    if isinstance(exc, BrokenPipeError):
        return "client went away mid-write"
    return f"{type(exc).__name__}: {exc}"


async def serve_forever(listener: socket.socket, state: ServerState, stop: asyncio.Event, *, ready=None) -> None:
    """Accept on ``listener`` until ``stop`` is set, then drain gracefully.

    Accepting is ours, not ``loop.create_server``'s, for two reasons: past ``--max-conns`` we stop
    reading the listener (clients wait in the backlog), and on stop we accept what the kernel
    already queued in the backlog before closing it, so no connection the kernel accepted is
    reset. The caller owns ``listener``.
    """
    loop = state.loop
    config = state.config
    listener.setblocking(False)
    fd = listener.fileno()
    errors = AcceptErrorLog()
    listening = False

    def can_accept() -> bool:
        open_here = len(state.connections) + pending[0]
        if state.admission is not None:
            return state.admission(open_here)
        return not config.max_conns or open_here < config.max_conns

    pending = [0]  # accepted sockets whose transport is not made yet

    def start_listening():
        nonlocal listening
        if not listening and not state.stopping and can_accept():
            listening = True
            loop.add_reader(fd, accept_some)

    def stop_listening():
        nonlocal listening
        if listening:
            listening = False
            loop.remove_reader(fd)

    async def adopt(sock):
        try:
            await loop.connect_accepted_socket(lambda: LineProtocol(state), sock)
        except OSError as exc:
            log.info("connection setup failed: %s", exc)
            sock.close()
        finally:
            pending[0] -= 1
        if not can_accept():
            stop_listening()

    def accept_some(limit=64):
        for _ in range(limit):
            if not can_accept():
                stop_listening()
                return
            try:
                sock, _peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if errors.failed(exc):
                    stop_listening()
                    loop.call_later(0.1, start_listening)
                    return
                raise
            errors.succeeded()
            pending[0] += 1
            loop.create_task(adopt(sock))

    state.on_close = start_listening
    period = sweep_period(config)
    loop.call_later(period, _sweep, state, period)
    start_listening()
    if ready is not None:
        ready()
    await stop.wait()
    state.stopping = True
    state.inline = False
    stop_listening()
    # Connections the kernel accepted but we have not: take them in, so they are served.
    accept_some(limit=config.backlog)
    if state.on_last_accept is not None:
        state.on_last_accept()
    for _ in range(3):  # let requests already read by the loop reach their protocol
        await asyncio.sleep(0)
    for conn in list(state.connections):
        conn.stop()
    if state.connections or pending[0]:
        try:
            await asyncio.wait_for(state.all_closed.wait(), config.grace)
        except asyncio.TimeoutError:
            log.warning("grace period of %.1fs over: closing %d connections still busy",
                        config.grace, len(state.connections))
            for conn in list(state.connections):
                conn.transport.abort()
            await asyncio.sleep(0)
    state.shutdown()


class AsyncioEngine(Engine):
    name = "asyncio"

    def serve(self, listener, service, *, ready, stats):
        loop = new_event_loop(self.config.uvloop)
        asyncio.set_event_loop(loop)
        log.debug("event loop: %s", loop_name(loop))
        try:
            loop.run_until_complete(self._main(listener, service, ready, stats))
        finally:
            loop.close()

    async def _main(self, listener, service, ready, stats):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        state = ServerState(service, self.config, stats)
        await serve_forever(listener, state, stop, ready=ready)
