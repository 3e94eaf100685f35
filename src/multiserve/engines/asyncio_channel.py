"""One connection on an event loop: an ``asyncio.Protocol`` that drives its session.

A protocol object rather than streams: a request that a cheap, non-blocking service answers is
answered inside ``data_received`` with no task, future or buffer copy, which is where the stream
API spends its time. A lone request to a service that calls back (``session.answer_soon``: an
ASGI app, whose own task is the only one per request) is answered in ``_answered``, a callback.
Anything else goes through one worker coroutine per connection (``_work``), so replies stay in
request order: ``session.answer_async`` awaits coroutine services and runs blocking and
CPU-bound ones in the server's pools. ``worker`` is whichever is in flight (a task, or the
service's handle): requests that arrive meanwhile queue behind it.

Timeouts cost no timer and no clock read per request: ``data_received`` only marks the
connection ``active``, and the server's one sweeper (every quarter of the shortest timeout at
most) turns that mark into ``last_active = now``, so an idle timeout fires at most one sweep
period late, never early (a clock read per read was ~500 of ~9,000 instructions a request,
callgrind). The start of a partial request, the rare case, reads the clock.
"""
from __future__ import annotations

import asyncio
import collections
import logging

from ..session import FAILED, PENDING, SETTLED, Interim
from . import timeouts as deadlines
from .base import LINGER_BYTES, LINGER_SECONDS, PIPELINE_QUANTUM, describe_error

log = logging.getLogger(__name__)

# Backpressure: stop reading from a client whose unsent replies pass 64 KiB (asyncio's own
# default high-water mark), or whose queued requests pass this many.
WRITE_HIGH_WATER = 64 * 1024
QUEUE_HIGH_WATER = 1024
# On stop, how long a connection that has sent nothing yet may take to send its first request:
# far above a loopback client's connect-to-send gap even on a loaded 2-core machine (scheduler
# slices are milliseconds), small against --grace's 10 s default.
FIRST_REQUEST_GRACE = 0.5
# A connection to hand off whose replies are still in our write buffer is looked at again this
# often (asyncio says when the buffer falls below its low-water mark, never when it is empty);
# a loopback client drains a buffer under the high-water mark in far less.
WRITE_POLL = 0.002


class Channel(asyncio.Protocol):
    """The connection's transport side. ``closing``: no more requests are read (finish the queue,
    then close, after ``final_reply`` if set). ``discarding >= 0``: after a final reply, input
    is counted and dropped until the client closes (see ``close_with_error``)."""

    __slots__ = (
        "server", "transport", "session", "queue", "worker", "last_active", "request_started",
        "write_paused_at", "reading_paused", "closing", "final_reply", "discarding", "drained", "write",
        "active", "handing", "handed_off",
    )

    def __init__(self, server):
        self.server = server
        self.transport = None
        self.session = None
        self.queue = None
        self.worker = None
        self.request_started = None
        self.write_paused_at = None
        self.reading_paused = False
        self.closing = False
        self.final_reply = None
        self.discarding = -1
        self.drained = None
        self.active = False
        self.handing = False  # retiring: hand the connection to another worker once idle
        self.handed_off = False  # its socket went to another worker: the connection lives on

    # -- life cycle ---------------------------------------------------------------------
    def connection_made(self, transport):
        server = self.server
        self.transport = transport
        self.write = transport.write
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.session = session = server.sessions.make_session(transport.get_extra_info("peername"))
        server.channels.add(self)
        self.last_active = server.loop.time()
        greeting = session.start()
        if greeting is not None:
            self._finish_then(greeting)
        elif server.stopping:  # adopted from the backlog (or handed to us) during a stop
            server.wind_down(self)

    def connection_lost(self, exc):
        server = self.server
        if self.worker is not None:
            self.worker.cancel()
        if self.drained is not None and not self.drained.done():
            self.drained.cancel()
        session = self.session
        if self.handed_off:  # not an end: the next worker serves it (and counts the connection)
            session.finish()
            server.stats.add(requests=session.requests)
            server.connection_closed(self)
            return
        if exc is not None and not session.errored:
            session.log_error(describe_error(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}")
        # not closing by our choice and no error: the client closed (a TLS transport may say so
        # only here, without eof_received)
        session.finish(None if self.closing or exc is not None else "client closed")
        server.stats.add_session(session)
        server.connection_closed(self)

    # -- reading ------------------------------------------------------------------------
    def data_received(self, data):
        if self.closing:
            if self.discarding >= 0:
                self.discarding += len(data)
                if self.discarding > LINGER_BYTES:
                    self.transport.abort()
            return
        server = self.server
        self.active = True
        session = self.session
        requests = session.receive(data)
        if requests:
            if self.worker is not None or not server.answer_inline:
                self._enqueue(requests)
            elif session.inline or (session.inline_split and session.can_answer_inline(requests)):
                rest = None
                if len(requests) > PIPELINE_QUANTUM:  # a long pipeline: the rest on later turns
                    requests, rest = requests[:PIPELINE_QUANTUM], requests[PIPELINE_QUANTUM:]
                reply = session.answer(requests[0]) if len(requests) == 1 else session.answer_all(requests)
                self.write(reply) if type(reply) is bytes else self.transport.writelines(reply)
                if server.on_request is not None:
                    server.on_request(len(requests))
                if rest:
                    self._enqueue(rest)
            elif session.soon and len(requests) == 1 and type(requests[0]) is not Interim:  # can_answer_soon, inline
                self.worker = session.answer_soon(requests[0], self._answered)
            else:
                self._enqueue(requests)
        status = SETTLED if session.protocol.settled else session.status()
        if status == SETTLED:
            self.request_started = None
            if server.retiring:
                self._finish_then(None)
            elif self.handing:
                self.try_hand_off()
        elif status == PENDING:
            if self.request_started is None:
                self.request_started = server.clock()
        elif status == FAILED:
            session.log_error(session.error.reason)
            self._finish_then(session.error.reply)
        else:
            self._finish_then(None)

    def eof_received(self):
        if self.discarding >= 0:
            self.transport.close()
            return True
        if not self.closing:
            last = self.session.receive_eof()
            if last:
                self._enqueue(last)
        self._finish_then(None)
        # True: we close once the replies are written. A TLS transport has no half-close: asyncio
        # closes it after this call whatever we return (and logs a warning for True).
        return self.server.tls is None

    # -- the worker: one per connection, only for requests not answered inline ----------------
    def _enqueue(self, requests):
        if self.queue is None:
            self.queue = collections.deque()
        self.queue.extend(requests)
        if len(self.queue) > QUEUE_HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        if self.worker is None:
            self.worker = self.server.loop.create_task(self._work())

    def _answered(self, reply):
        """``session.answer_soon``'s callback: write the reply (a whole one here; a streamed one
        by the worker), then go on as ``_work`` does after a reply."""
        self.worker = None
        if self.transport.is_closing():
            return
        if type(reply) is not bytes:  # pieces, written with backpressure: the worker's job
            if self.queue is None:
                self.queue = collections.deque()
            self.worker = self.server.loop.create_task(self._work(reply))
            return
        self.write(reply)
        # _replied(), inline: this runs once per request
        if not self.session.protocol.keep_alive:
            self.closing = True
        self.active = True
        server = self.server
        if server.on_request is not None:
            server.on_request(1)
        if self.reading_paused:
            self._read_again()
        if self.queue:
            self.worker = server.loop.create_task(self._work())
        if self.worker is None:
            if self.closing:
                self._close_now()
            elif self.handing:  # retiring: this was the reply try_hand_off waited for
                self.try_hand_off()

    def _replied(self, n: int = 1):
        """After each reply (or ``n`` of them) is written: what the session says of the
        connection, the counts, and reading again once the queue is short."""
        if not self.session.protocol.keep_alive:  # the reply ended the connection (the session's
            self.closing = True                   # contract: close once the replies are written)
        self.active = True
        server = self.server
        if server.on_request is not None:
            server.on_request(n)
        if self.reading_paused:
            self._read_again()

    def _read_again(self):
        """Read the client again, if reading was paused and nothing holds it now: the client
        takes our replies (no write backpressure), the queue is short, no hand-off waits."""
        if self.reading_paused and self.write_paused_at is None and not self.handing \
                and (self.queue is None or len(self.queue) < QUEUE_HIGH_WATER // 2):
            self.reading_paused = False
            self.transport.resume_reading()

    async def _work(self, reply=None):
        """Answer the queue in order; ``reply``: one to write first (``_answered``'s streamed one)."""
        server, session, queue = self.server, self.session, self.queue
        try:
            if reply is not None:
                await self._write(reply)
                self._replied()
            while queue:
                if session.inline and server.answer_inline:
                    await self._answer_quantum(queue)
                    continue
                reply = await session.answer_async(queue.popleft(), server.pools)
                if self.transport.is_closing():
                    return
                await self._write(reply)
                self._replied()
        finally:
            self.worker = None
        if self.closing:
            self._close_now()
        elif self.handing:
            self.try_hand_off()

    async def _answer_quantum(self, queue) -> None:
        """Up to PIPELINE_QUANTUM queued requests of an inline service answered at once, then the
        other connections' turn; while the client takes no replies, none (backpressure)."""
        if self.write_paused_at is not None:
            self.drained = self.server.loop.create_future()
            await self.drained
            return
        batch = [queue.popleft() for _ in range(min(len(queue), PIPELINE_QUANTUM))]
        reply = self.session.answer_all(batch)
        self.write(reply) if type(reply) is bytes else self.transport.writelines(reply)
        self._replied(len(batch))
        await asyncio.sleep(0)

    async def _write(self, reply) -> None:
        """Write a reply (bytes, or an iterable or async iterable of pieces); a streamed one piece
        by piece, waiting while the client is slow."""
        if type(reply) is bytes:
            self.transport.write(reply)
            return
        if hasattr(reply, "__aiter__"):  # pieces produced off the loop (session.answer_async)
            try:
                async for piece in reply:
                    self.transport.write(piece)
                    if self.write_paused_at is not None:
                        self.drained = self.server.loop.create_future()
                        await self.drained
            finally:  # also when cut short (the client left): the stream's clean-up runs now
                await reply.aclose()
            return
        for piece in reply:
            self.transport.write(piece)
            if self.write_paused_at is not None:
                self.drained = self.server.loop.create_future()
                await self.drained

    # -- closing ------------------------------------------------------------------------------
    def _finish_then(self, final_reply: bytes | None):
        """No more requests: answer what is queued, then close (after ``final_reply`` if given)."""
        self.closing = True
        if final_reply is not None:
            self.final_reply = final_reply
        if self.worker is None:
            self._close_now()

    def _close_now(self):
        transport = self.transport
        if transport.is_closing():
            return
        if self.final_reply is None:
            transport.close()  # flushes what is buffered first
            return
        # Deliver the final reply: send it, shut down our side, discard what the client still
        # sends until it closes (bounded), then close; see engines.base.close_with_error.
        transport.write(self.final_reply)
        self.discarding = 0
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self.server.loop.call_later(LINGER_SECONDS, transport.close)

    # -- timeouts (called by the sweeper) ----------------------------------------------------
    def check_timeouts(self, now: float) -> None:
        if self.transport.is_closing() or self.discarding >= 0:
            return
        config = self.server.config
        if self.write_paused_at is not None:
            if now - self.write_paused_at >= config.idle_timeout:
                self.session.log_error(f"send made no progress for {config.idle_timeout:.0f}s (client not reading); closed")
                self.transport.abort()
            return
        if self.closing:
            return
        if self.active:  # something happened since the last sweep: idle counts from now
            self.active = False
            self.last_active = now
        if self.request_started is not None and now >= self.request_started + config.request_timeout:
            reason = deadlines.REQUEST
        elif self.worker is None and now >= self.last_active + config.idle_timeout:
            reason = deadlines.IDLE
        else:
            return
        self.request_started = None
        self.session.log_error(reason)
        self._finish_then(self.session.error_reply(reason))

    # -- backpressure from the transport -----------------------------------------------------
    def pause_writing(self):
        self.write_paused_at = self.server.loop.time()
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_writing(self):
        self.write_paused_at = None
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self._read_again()

    # -- stop -----------------------------------------------------------------------------------
    def stop(self):
        """Graceful stop: finish the requests already received, then close.

        A client that has not sent a byte yet (accepted just before the stop, or from the backlog
        on stop) gets FIRST_REQUEST_GRACE to send its first request, which is answered: closing
        it at once would fail a new connection whose request is a moment away.
        """
        if self.closing:
            return
        if self.session.requests == 0 and self.queue is None and self.request_started is None:
            self.server.loop.call_later(FIRST_REQUEST_GRACE, self._finish_if_open)
            return
        self._finish_then(None)

    def hand_off_when_idle(self):
        """Retiring with another worker to take over: read no new request, answer those already
        read, then pass the socket on (``server.hand_off``) once idle: no request half read (its
        bytes are in our protocol buffer, not the kernel's, so one begun is read on until
        complete and answered first), no reply queued or unsent. What the client sends
        meanwhile waits in the kernel for the next worker. ``--grace`` bounds the wait, as for
        a close."""
        if self.closing:
            return
        self.handing = True
        self.try_hand_off()

    def try_hand_off(self):
        if self.closing or self.transport.is_closing():
            return
        if self.session.status() != SETTLED:
            return  # a request half read: data_received calls again once it is complete
        if not self.session.movable():  # its service keeps per-connection state: close as before
            self.give_up_hand_off()
            return
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        if self.worker is not None:
            return  # _work calls again once the queue is answered
        if self.transport.get_write_buffer_size():
            self.server.loop.call_later(WRITE_POLL, self.try_hand_off)  # no callback says "flushed"
            return
        self.server.hand_off(self)

    def give_up_hand_off(self):
        """No worker to take it: finish and close as a stop does."""
        self.handing = False
        self._read_again()
        self.stop()

    def retire(self):
        """Close once the request in flight is answered; a request half received is read on, and
        a connection that has sent nothing yet is answered once (its request may be a moment
        away: see ``stop``); ``data_received`` closes those after their reply."""
        if not self.closing and not self.session.pending and (self.session.requests or self.queue):
            self._finish_then(None)

    def _finish_if_open(self):
        if not self.closing and not self.transport.is_closing():
            self._finish_then(None)
