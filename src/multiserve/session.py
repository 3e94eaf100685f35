"""The one seam between engines and everything above them: a connection's bytes in, replies out.

An engine never names a protocol or a service. It gets a :class:`SessionFactory` and, per
accepted connection, calls ``make_session(peer)``; then, for that connection::

    greeting = session.start()         # None, or a final reply (setup() failed): send it, close
    requests = session.receive(data)   # after every read; [] until a request is complete
    reply = session.answer(request)    # on the engine's call path, in order (or answer_all,
                                       # or ``await session.answer_async(request, pools)``, or
                                       # ``session.answer_soon(request, done)`` when
                                       # ``session.can_answer_soon(requests)``: no engine task)
    session.status()                   # after a receive: SETTLED, PENDING (a request begun: the
                                       # request timeout runs), FAILED (send session.error.reply,
                                       # close) or CLOSE (not keep-alive: close once written);
                                       # session.protocol.settled (a plain attribute) is True
                                       # when it would say SETTLED: the hot path reads that
    requests = session.receive_eof()   # the client finished sending
    session.finish()                   # exactly once, whatever happened

A reply is ``bytes`` or, for a streamed response, an iterable of byte pieces written in order.
A protocol's :class:`~multiserve.protocol.base.Interim` among the requests (HTTP's 100 Continue)
is answered with its own bytes, without the service, and not counted. A streamed reply whose
pieces raise (a WSGI body failing midway) ends there: the error is logged like a ``handle`` error
and the protocol, which saw it pass, decides what the connection does (HTTP closes it). On an
event loop (``answer_async``), a blocking service's streamed reply is an async iterable whose
pieces are pulled on the thread pool, so the service's code never runs on the loop.
Every call path (inline, thread pool, process pool, coroutine) goes through the same counting,
the same error wrapping and the same replies: a service that raises, or returns something that
is not a reply, costs that request the protocol's "service error" reply and one log line (its
traceback the first time that error is seen), never the connection.
"""
from __future__ import annotations

import itertools
import logging
import threading
import traceback

from .protocol.base import CLOSE, FAILED, PENDING, SETTLED, Interim  # noqa: F401  (engines read the states here)
from .services.base import Connection, has_async_handle, has_sync_handle, overrides

log = logging.getLogger(__name__)

_loops = threading.local()
# (exception type, file, line) of service errors already logged with their traceback
_seen_errors: set = set()
_DONE = object()  # the end of a streamed reply pulled on a thread pool


_runners: list = []  # every thread's runner, closed by close_coroutine_runners()
_runners_lock = threading.Lock()
_generation = [0]  # bumped by each close: a thread's older runner is closed, make a new one


def run_coroutine_here(coro):
    """Run ``coro`` to completion on this thread's own event loop (made once per thread)."""
    runner = getattr(_loops, "runner", None)
    if runner is None or _loops.generation != _generation[0]:
        import asyncio  # only for async services under a non-asyncio engine

        runner = _loops.runner = asyncio.Runner()
        _loops.generation = _generation[0]
        with _runners_lock:
            _runners.append(runner)
    return runner.run(coro)


def close_coroutine_runners() -> None:
    """Close the threads' event loops once serving is over (their threads are idle then):
    left to the interpreter's exit, a pool thread's loop is finalized after its own self-pipe
    and prints a traceback."""
    with _runners_lock:
        runners, _runners[:] = list(_runners), []
        _generation[0] += 1
    for runner in runners:
        try:
            runner.close()
        except Exception as exc:  # a loop a thread still runs: leave it to the exit
            log.debug("closing a coroutine runner: %s: %s", type(exc).__name__, exc)


def _submit_quietly(threads, fn) -> None:
    """``fn`` on ``threads``, unless the pool is already shut down (the server is stopping)."""
    try:
        threads.submit(fn)
    except RuntimeError:
        pass


def call_cpu(service, request):
    """What a process pool runs (module level, so it pickles): the service without a connection."""
    return service.handle(request, None)


def describe_peer(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class ServiceStartError(RuntimeError):
    """The service could not start on the serving loop (``open_async`` raised): the server stops
    (a hybrid worker exits as a boot error, so the supervisor does not restart it in a loop)."""


class CallPlan:
    """How one service is called: decided once per service, not per request.

    ``inline``: cheap and non-blocking, call ``handle`` right where the bytes arrived.
    ``blocking``: ``handle`` may block; event-loop engines use a thread pool.
    ``cpu``: CPU-bound; engines with a process pool send it there.
    ``coroutine``: the service offers ``handle_async``; event-loop engines await it.
    ``split``: the service names CPU-bound requests one by one (``cpu_bound_for``).
    ``soon``: a coroutine service that also offers ``handle_soon(request, conn, done)`` (the ASGI
    adapter): it starts its own task and calls back, so an event-loop engine needs none per request.
    """

    __slots__ = ("sync", "coroutine", "cpu", "inline", "blocking", "split", "cpu_bound_for", "soon")

    def __init__(self, service):
        self.sync = has_sync_handle(service)
        self.coroutine = has_async_handle(service)
        self.soon = self.coroutine and not self.sync and callable(getattr(service, "handle_soon", None))
        self.cpu = bool(getattr(service, "cpu_bound", False)) and self.sync
        self.split = self.sync and overrides(service, "cpu_bound_for")
        self.cpu_bound_for = service.cpu_bound_for if self.split else None
        self.inline = self.sync and not getattr(service, "blocking", True) and not self.cpu
        self.blocking = self.sync and not self.inline and not self.cpu

    @property
    def wants_cpu_pool(self) -> bool:
        return self.cpu or self.split


class Pools:
    """Where an event-loop engine runs the calls that must leave its loop: ``run_in_executor``
    (the loop's), ``threads`` (an executor for blocking calls) and ``cpu`` (a process pool for
    CPU-bound calls, or None: they then go to ``threads``)."""

    __slots__ = ("run_in_executor", "threads", "cpu")

    def __init__(self, run_in_executor, threads, cpu=None):
        self.run_in_executor = run_in_executor
        self.threads = threads
        self.cpu = cpu


class SessionFactory:
    """Makes the sessions of one server: the service, its call plan and the protocol, bound once.

    ``make_session(peer)`` is all an engine calls per connection. ``open_service()`` and
    ``close_service()`` run the service's ``open``/``close`` once per serving process (the
    hybrid engine calls them in each worker, after the fork). ``observer``: None, or a
    :class:`~multiserve.observed.Observer` (metrics, access log) whose sessions are made instead
    and which is opened and closed with the service.
    """

    def __init__(self, service, make_protocol, observer=None):
        self.service = service
        self.plan = CallPlan(service)
        self.make_protocol = make_protocol
        self.observer = observer
        # How a coroutine service runs where no event loop serves (thread, process, gevent):
        # an engine may offer another way (gevent: OS threads, since asyncio's "running loop"
        # is per OS thread and greenlets share one).
        self.run_coroutine = run_coroutine_here

    def make_session(self, peer=None) -> "Session":
        if self.observer is not None:
            return self.observer.make_session(self.service, self.make_protocol(), peer, self.plan, self.run_coroutine)
        return Session(self.service, self.make_protocol(), peer, self.plan, self.run_coroutine)

    __call__ = make_session

    def connections_moved(self, outcome: str, n: int = 1) -> None:
        """An engine moved connections between processes (``meter.HANDOFF_OUTCOMES``: handed
        off, adopted, closed instead): counted when the server is metered, else nothing."""
        if n and self.observer is not None and self.observer.meter is not None:
            self.observer.meter.moved(outcome, n)

    def open_service(self) -> None:
        if self.observer is not None:
            self.observer.open()
        opened = getattr(self.service, "open", None)
        if opened is not None:
            opened()

    def close_service(self) -> None:
        try:
            closer = getattr(self.service, "close", None)
            if closer is not None:
                closer()
        finally:
            if self.observer is not None:
                self.observer.close()

    async def open_service_async(self) -> None:
        """On an event-loop engine, on the loop that serves, before it accepts: the service's
        ``async open_async()`` if it has one (an ASGI app's lifespan startup)."""
        opened = getattr(self.service, "open_async", None)
        if opened is not None:
            try:
                await opened()
            except Exception as exc:
                raise ServiceStartError(f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError)
                                        else str(exc)) from exc

    async def close_service_async(self) -> None:
        """The same, after the drain: ``async close_async()`` (lifespan shutdown)."""
        closer = getattr(self.service, "close_async", None)
        if closer is not None:
            await closer()


class Session:
    """One connection's protocol state and service calls (see the module docstring).

    Not thread-safe: an engine serves a connection on one thread at a time. ``requests`` counts
    the requests answered; ``errored`` is 1 once the connection met an error worth counting
    (``log_error``), so every engine adds the same numbers to the summary.
    """

    __slots__ = ("service", "protocol", "conn", "plan", "requests", "errored", "receive", "status", "inline",
                 "inline_split", "soon", "_call", "_passes", "_started", "_finished", "_run_coroutine_with", "_soon_done")

    def __init__(self, service, protocol, peer=None, plan: CallPlan | None = None,
                 run_coroutine=run_coroutine_here):
        self.service = service
        self.protocol = protocol
        self.conn = Connection(peer)
        self.plan = plan = plan or CallPlan(service)
        self.requests = 0
        self.errored = 0
        self.receive = protocol.receive_data  # the hot path: the protocol's own methods
        # after a receive: SETTLED, PENDING (a request begun), FAILED (send error.reply, close)
        # or CLOSE (not keep-alive: close once the replies are written)
        self.status = protocol.status
        # every request may be answered where its bytes arrived (see can_answer_inline)
        self.inline = plan.inline and plan.cpu_bound_for is None
        # some requests may be answered inline (see can_answer_inline): only then is it worth asking
        self.inline_split = plan.inline and plan.cpu_bound_for is not None
        # a request may be answered with answer_soon (see can_answer_soon)
        self.soon = plan.soon
        self._soon_done = None
        self._run_coroutine_with = run_coroutine
        self._call = service.handle if plan.sync else self._run_coroutine
        self._passes = protocol.passes_bytes
        self._started = False
        self._finished = False

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> bytes | None:
        """Run the service's ``setup``. Returns None, or the final reply to send before closing
        when ``setup`` raised (logged, counted as the connection's error)."""
        setup = getattr(self.service, "setup", None)
        try:
            if setup is not None:
                setup(self.conn)
        except Exception as exc:
            self._log_service_error("setup()", exc)
            self.errored = 1
            return self.protocol.error_reply("service error")
        self._started = True
        return None

    def finish(self, closed_by: str | None = None) -> None:
        """The connection ended: the service's ``finish`` once (only after a successful setup).
        ``closed_by``: why, when the engine knows it and the session cannot (a TLS transport that
        reports the client's close without an end of input: "client closed"); the access log
        says it."""
        if self._finished:
            return
        self._finished = True
        finish = getattr(self.service, "finish", None)
        if finish is not None and self._started:
            try:
                finish(self.conn)
            except Exception as exc:
                self._log_service_error("finish()", exc)

    def log_error(self, reason: str, level: int = logging.INFO) -> None:
        """The connection ends on an error: one log line, counted once."""
        self.errored = 1
        log.log(level, "connection %s: %s", describe_peer(self.conn.peer), reason)

    # -- reading ----------------------------------------------------------------------------
    def receive_eof(self) -> list:
        return self.protocol.receive_eof()

    @property
    def error(self):
        """None, or the :class:`~multiserve.protocol.ProtocolError` the client's bytes caused."""
        return self.protocol.error

    @property
    def pending(self) -> int:
        return self.protocol.pending

    @property
    def keep_alive(self) -> bool:
        return self.protocol.keep_alive

    def error_reply(self, reason: str) -> bytes | None:
        """What to send before closing for a server-side reason ("idle timeout", ...), or None."""
        return self.protocol.error_reply(reason)

    def movable(self) -> bool:
        """True if the connection may go on in another process with a fresh session (the hybrid
        engine's hand-off): the service keeps nothing per connection, i.e. it has no ``setup`` or
        ``finish`` of its own and left ``conn.state`` unused. Otherwise moving it would silently
        drop that state: it is closed instead."""
        service = self.service
        return self.conn._state is None and not overrides(service, "setup") and not overrides(service, "finish")

    def can_answer_inline(self, requests) -> bool:
        """True if every one of ``requests`` may be answered right where the bytes arrived (an
        event loop's callback): the service is cheap and none of them is CPU-bound."""
        if self.inline:
            return True
        plan = self.plan
        return plan.inline and (plan.cpu_bound_for is None or not any(map(plan.cpu_bound_for, requests)))

    def can_answer_soon(self, requests) -> bool:
        """True if ``requests`` is one request that ``answer_soon`` may answer (a service that
        calls back, and no interim reply among them)."""
        return self.soon and len(requests) == 1 and type(requests[0]) is not Interim

    # -- answering --------------------------------------------------------------------------
    def answer(self, request):
        """The reply to ``request``, computed on the calling thread (which it may block)."""
        if type(request) is Interim:
            return request.wire
        self.requests += 1
        try:
            reply = self._call(request, self.conn)
        except Exception as exc:
            return self._service_failed(exc)
        if self._passes and type(reply) is bytes:
            return reply
        return self._send(reply)

    def answer_all(self, requests):
        """The replies to ``requests``, in order, as one write."""
        if len(requests) == 1:
            return self.answer(requests[0])
        replies = [self.answer(request) for request in requests]
        if all(type(reply) is bytes for reply in replies):
            return b"".join(replies)
        # lazily: a streamed reply among them is pulled as it is written, never held whole
        return itertools.chain.from_iterable([reply] if type(reply) is bytes else reply for reply in replies)

    async def answer_async(self, request, pools: Pools):
        """The reply to ``request`` on an event loop: awaited, or run in ``pools``."""
        if type(request) is Interim:
            return request.wire
        self.requests += 1
        plan = self.plan
        try:
            if plan.cpu or (plan.split and plan.cpu_bound_for(request)):
                if pools.cpu is not None:
                    reply = await pools.run_in_executor(pools.cpu, call_cpu, self.service, request)
                else:
                    reply = await pools.run_in_executor(pools.threads, self.service.handle, request, self.conn)
            elif plan.coroutine:
                reply = await self.service.handle_async(request, self.conn)
            elif plan.blocking:
                reply = await pools.run_in_executor(pools.threads, self.service.handle, request, self.conn)
            else:
                reply = self.service.handle(request, self.conn)
        except Exception as exc:
            return self._service_failed(exc)
        if self._passes and type(reply) is bytes:
            return reply
        wire = self._send(reply)
        if plan.blocking and type(wire) not in (bytes, list, tuple):
            return self._pulled_in(wire, pools.threads)
        return wire

    def answer_soon(self, request, done):
        """On an event loop, when ``can_answer_soon``: start answering ``request`` without a task
        of the engine's. ``done(reply)`` is called once, later, on the loop, with what
        ``answer_async`` would have returned (the same counting and error replies); never if the
        returned handle's ``cancel()`` is called first (the client left). One request at a time
        per session."""
        self.requests += 1
        self._soon_done = done
        try:
            return self.service.handle_soon(request, self.conn, self._answered_soon)
        except Exception as exc:
            import asyncio  # only on event-loop engines

            self._soon_done = None
            return asyncio.get_running_loop().call_soon(done, self._service_failed(exc))

    def _answered_soon(self, response, exc) -> None:
        done, self._soon_done = self._soon_done, None
        if exc is not None:
            done(self._service_failed(exc))
            return
        try:  # _send's first half, inline: this runs once per request
            wire = self.protocol.send(response)
        except TypeError as error:
            done(self._unsendable(response, error))
            return
        done(wire if type(wire) is bytes else self._guard(wire))

    async def _pulled_in(self, pieces, threads):
        """A blocking service's streamed reply on an event loop: each piece is pulled on
        ``threads``, where the service's code runs (a WSGI body's generator may block between
        pieces), never on the loop; an async iterable the engine writes as it comes. If the
        engine stops early (the client left), the stream is closed on ``threads`` too, once the
        piece being pulled is in (a generator cannot be closed while it runs)."""
        import asyncio  # only on event-loop engines

        iterator = pieces  # a generator (the session's guarded stream)
        pulling = None
        try:
            while True:
                try:
                    pulling = threads.submit(next, iterator, _DONE)
                except RuntimeError:  # the pool is shut down: the server is past its grace period
                    pulling = None
                    break
                piece = await asyncio.wrap_future(pulling)
                if piece is _DONE:
                    return  # exhausted: nothing to close
                yield piece
        except BaseException:  # the engine stopped early (cancelled, or closed the stream)
            if pulling is not None and not pulling.done():
                pulling.add_done_callback(lambda _: _submit_quietly(threads, iterator.close))
            else:
                _submit_quietly(threads, iterator.close)
            raise

    def _send(self, reply):
        """The protocol's wire form of ``reply``; a reply the protocol cannot send (a ``str``
        where bytes are due) is the service's error, named by its type."""
        try:
            wire = self.protocol.send(reply)
        except TypeError as exc:
            return self._unsendable(reply, exc)
        return self._guard(wire)

    def _unsendable(self, reply, exc: TypeError) -> bytes:
        log.error("service handle() for %s returned %s: %s; sent the service error reply",
                  describe_peer(self.conn.peer), type(reply).__name__, exc)
        return self.protocol.error_reply("service error")

    def _guard(self, wire):
        """A wire reply as the engine may write it: a stream of pieces guarded (``_guarded``)."""
        if type(wire) in (bytes, list, tuple):
            return wire
        if hasattr(wire, "__aiter__"):
            return self._guarded_async(wire)
        return self._guarded(wire)

    async def _guarded_async(self, pieces):
        """``_guarded`` for an async stream (an ASGI body, on an event loop)."""
        try:
            async for piece in pieces:
                yield piece
        except Exception as exc:
            self.errored = 1
            self._log_service_error("response body", exc)
        finally:
            await pieces.aclose()  # an async generator is not closed by leaving its ``async for``

    def _guarded(self, pieces):
        """A streamed reply's pieces; an exception from them is the service's, logged here, and
        ends the stream (never the engine's write loop)."""
        try:
            yield from pieces
        except Exception as exc:
            self.errored = 1
            self._log_service_error("response body", exc)

    def _run_coroutine(self, request, conn):
        return self._run_coroutine_with(self.service.handle_async(request, conn))

    def _service_failed(self, exc: Exception) -> bytes:
        self._log_service_error("handle()", exc)
        return self.protocol.error_reply("service error")

    def _log_service_error(self, where: str, exc: Exception) -> None:
        """A user's exception: its traceback once per distinct error (type and raising line),
        one line after that, so a user can debug their service without a flood."""
        peer = describe_peer(self.conn.peer)
        tb = traceback.extract_tb(exc.__traceback__)
        key = (type(exc), *(tb[-1][:2] if tb else ()))
        if key in _seen_errors:
            log.error("service %s failed for %s: %s: %s", where, peer, type(exc).__name__, exc)
            return
        _seen_errors.add(key)
        log.error("service %s failed for %s: %s: %s (traceback shown once)", where, peer,
                  type(exc).__name__, exc, exc_info=exc)
