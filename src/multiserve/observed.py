"""Sessions that count (``--metrics-port``) and log (``--access-log``): a subclass of
:class:`~multiserve.session.Session`, made only when one of them is on, so a server without them
runs the plain session and pays nothing.

What an :class:`ObservedSession` adds around the session's own calls (engines call nothing new):
``make_session`` opens its tally (``meter.opened``); ``answer``/``answer_async`` time the request
and add it to the tally (``meter.record``), and, for a protocol that logs per request (HTTP), queue
its access-log entry (``protocol.access_entry``); ``log_error`` (the first one) and a service
error count one error of their kind; ``finish`` closes the tally and, for a protocol that logs per
connection (the line protocol), queues the connection's line: its requests, bytes in and out
(what the session was handed and produced: final error replies included), duration, and why it
closed (the error's reason, ``client closed`` after its end of input, ``closed by protocol`` when
the protocol ended it, else ``closed by server``: a stop, a drain, a retire).
"""
from __future__ import annotations

import logging
import time

from .meter import DURATION_NS, SLOT_OF_BITS, error_kind
from .protocol.base import Interim
from .session import Session

log = logging.getLogger(__name__)
_now = time.perf_counter_ns


class Observer:
    """What a server observes: ``meter`` (a ``multiserve.meter`` meter) and/or ``access_log`` (an
    :class:`~multiserve.access_log.AccessLog`), either None. ``open()``/``close()`` once per serving
    process (``SessionFactory.open_service``/``close_service`` call them)."""

    def __init__(self, meter=None, access_log=None):
        self.meter = meter
        self.access_log = access_log

    def open(self) -> None:
        if self.meter is not None:
            self.meter.open()
        if self.access_log is not None:
            self.access_log.open()

    def close(self) -> None:
        if self.access_log is not None:
            self.access_log.close()

    def make_session(self, service, protocol, peer, plan, run_coroutine) -> "ObservedSession":
        lean = self.access_log is None and self.meter.lock_free
        return (MeteredSession if lean else ObservedSession)(service, protocol, peer, plan, run_coroutine, self)


class ObservedSession(Session):
    """A session that counts and/or logs (see the module docstring); the engine's contract is
    the session's, unchanged."""

    __slots__ = ("meter", "tally", "_put", "_per_request", "_opened", "_bytes_in", "_bytes_out", "_eof",
                 "_reason", "_response")

    def __init__(self, service, protocol, peer, plan, run_coroutine, observer: Observer):
        super().__init__(service, protocol, peer, plan, run_coroutine)
        meter, access_log = observer.meter, observer.access_log
        self.meter = meter
        self.tally = meter.opened(self) if meter is not None else None
        self._put = access_log.put if access_log is not None else None
        self._per_request = self._put is not None and protocol.access_log == "request"
        self._opened = time.perf_counter()
        self._bytes_in = self._bytes_out = 0
        self._eof = False
        self._reason = None
        self._response = None
        if self._put is not None and not self._per_request:
            self.receive = self._receive_counted

    # -- reading ----------------------------------------------------------------------------
    def _receive_counted(self, data: bytes) -> list:
        self._bytes_in += len(data)
        return self.protocol.receive_data(data)

    def receive_eof(self) -> list:
        self._eof = True
        return self.protocol.receive_eof()

    # -- answering --------------------------------------------------------------------------
    def answer(self, request):
        if type(request) is Interim:
            return request.wire
        started = _now()
        reply = Session.answer(self, request)
        self._answered(request, reply, _now() - started)
        return reply

    async def answer_async(self, request, pools):
        if type(request) is Interim:
            return request.wire
        started = _now()
        reply = await Session.answer_async(self, request, pools)
        self._answered(request, reply, _now() - started)
        return reply

    def answer_soon(self, request, done):
        """The event loops' one-task path (an ASGI app): timed from here to ``done``."""
        started = _now()

        def answered(reply):
            self._answered(request, reply, _now() - started)
            done(reply)

        return Session.answer_soon(self, request, answered)

    def _answered_soon(self, response, exc) -> None:
        self._response = response if exc is None else None  # as _send keeps it, for the access log
        Session._answered_soon(self, response, exc)

    def _answered(self, request, reply, ns: int) -> None:
        if self.tally is not None:
            self.meter.record(self.tally, ns)
        if self._put is None:
            return
        if self._per_request:
            response, self._response = self._response, None
            self._put(("request", self.conn.peer, time.time(), *self.protocol.access_entry(request, response),
                       ns / 1e9))
        else:
            self._bytes_out += _size(reply)

    def _send(self, reply):
        self._response = reply
        return Session._send(self, reply)

    def error_reply(self, reason: str) -> bytes | None:
        reply = self.protocol.error_reply(reason)
        if reply and self._put is not None and not self._per_request:
            self._bytes_out += len(reply)
        return reply

    # -- errors -----------------------------------------------------------------------------
    def log_error(self, reason: str, level: int = logging.INFO) -> None:
        first = not self.errored
        Session.log_error(self, reason, level)
        if not first:
            return
        self._reason = reason
        error = self.protocol.error
        if self.tally is not None:
            self.meter.error(self.tally, error_kind(reason, error))
        if self._put is not None and error is not None and reason == error.reason:
            if self._per_request:  # the refused request's line
                self._put(("request", self.conn.peer, time.time(), *self.protocol.access_entry(None, None), 0.0))
            else:
                self._bytes_out += len(error.reply)

    def _service_failed(self, exc: Exception) -> bytes:
        self._response = None  # the protocol's "service error" reply answers this request
        return Session._service_failed(self, exc)

    def _log_service_error(self, where: str, exc: Exception) -> None:
        if where == "setup()":
            self._reason = "service setup() failed"
        if self.tally is not None:
            self.meter.error(self.tally, "service")
        Session._log_service_error(self, where, exc)

    # -- the end ----------------------------------------------------------------------------
    def finish(self, closed_by: str | None = None) -> None:
        if self._finished:
            return
        Session.finish(self)
        if self.tally is not None:
            self.meter.closed(self)
        if self._put is not None and not self._per_request:
            if self._reason is not None:
                reason = self._reason
            elif closed_by is not None:
                reason = closed_by
            elif self._eof:
                reason = "client closed"
            elif not self.protocol.keep_alive:
                reason = "closed by protocol"
            else:
                reason = "closed by server"
            self._put(("connection", self.conn.peer, self.requests, self._bytes_in, self._bytes_out,
                       time.perf_counter() - self._opened, reason))


def _size(reply) -> int:
    if type(reply) is bytes:
        return len(reply)
    if type(reply) in (list, tuple):
        return sum(map(len, reply))
    return 0  # a streamed reply: its pieces are not counted (the line protocol never streams)


class MeteredSession(ObservedSession):
    """The common case, metrics without an access log on a lock-free meter: ``answer`` is
    Session.answer's body with ``meter.record`` inlined (each Python call or global lookup
    saved is ~2% of the metrics' cost per request: benchmarks/hot_path.sh engine-metrics)."""

    __slots__ = ()

    def answer(self, request, _now=_now, _slot=SLOT_OF_BITS, _sum=DURATION_NS):
        if type(request) is Interim:
            return request.wire
        started = _now()
        self.requests += 1
        try:
            reply = self._call(request, self.conn)
        except Exception as exc:
            reply = self._service_failed(exc)
        else:
            if not (self._passes and type(reply) is bytes):
                reply = self._send(reply)
        ns = _now() - started
        tally = self.tally
        tally[_sum] += ns
        tally[_slot[ns.bit_length()]] += 1
        return reply
