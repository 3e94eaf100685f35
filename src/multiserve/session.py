"""The one per-connection handler every engine drives: bytes in, replies out, "close now?".

A :class:`Session` owns the framing state and the service's per-connection object. It never does
I/O: engines call ``receive`` with the bytes they read, then answer each returned request with
``handle`` (synchronous, may block) or ``handle_async`` (a coroutine), in order, and write what
those return. After the lines of a chunk are answered, ``failed`` says the client broke the
protocol: write ``error`` and close. ``finish`` must be called once when the connection ends.
"""
from __future__ import annotations

import logging
import threading

from .protocol import LineFramer, error_reply
from .services.base import Connection, has_async_handle, has_sync_handle

log = logging.getLogger("multiserve")

SERVICE_ERROR = error_reply("service error")
_loops = threading.local()


def run_coroutine_here(coro):
    """Run ``coro`` to completion on this thread's own event loop (made once per thread)."""
    runner = getattr(_loops, "runner", None)
    if runner is None:
        import asyncio  # only for async services under a non-asyncio engine

        runner = _loops.runner = asyncio.Runner()
    return runner.run(coro)


class CallPlan:
    """How an engine should call one service: decided once per service, not per request.

    ``inline``: cheap and non-blocking, call ``handle`` right where the bytes arrived.
    ``blocking``: ``handle`` may block; event-loop engines use a thread pool.
    ``cpu``: CPU-bound; engines with a process pool send it there.
    ``coroutine``: the service offers ``handle_async``; event-loop engines await it.
    """

    def __init__(self, service):
        self.sync = has_sync_handle(service)
        self.coroutine = has_async_handle(service)
        self.cpu = bool(getattr(service, "cpu_bound", False)) and self.sync
        self.inline = self.sync and not getattr(service, "blocking", True) and not self.cpu
        self.blocking = self.sync and not self.inline and not self.cpu


class Session:
    __slots__ = ("service", "framer", "conn", "requests", "_finished", "_sync")

    def __init__(self, service, max_line: int, peer=None, plan: CallPlan | None = None):
        self.service = service
        self.framer = LineFramer(max_line)
        self.conn = Connection(peer)
        self.requests = 0
        self._finished = False
        self._sync = (plan or CallPlan(service)).sync
        service.setup(self.conn) if hasattr(service, "setup") else None

    # -- framing ---------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[bytes]:
        return self.framer.feed(data)

    def eof(self) -> bytes | None:
        return self.framer.eof()

    @property
    def failed(self) -> bool:
        return self.framer.failed

    @property
    def error(self) -> bytes:
        return error_reply(str(self.framer.error))

    @property
    def pending(self) -> int:
        return self.framer.pending

    # -- calling the service --------------------------------------------------------------
    def handle(self, request: bytes) -> bytes:
        """The reply to ``request``, computed on the calling thread (which it may block)."""
        self.requests += 1
        try:
            if self._sync:
                return self.service.handle(request, self.conn)
            return run_coroutine_here(self.service.handle_async(request, self.conn))
        except Exception as exc:
            return self._service_failed(exc)

    async def handle_async(self, request: bytes) -> bytes:
        self.requests += 1
        try:
            return await self.service.handle_async(request, self.conn)
        except Exception as exc:
            return self._service_failed(exc)

    def count_request(self) -> None:
        """For engines that call the service themselves (thread or process pools)."""
        self.requests += 1

    def _service_failed(self, exc: Exception) -> bytes:
        log.error("service error for %s: %s: %s", self.conn.peer, type(exc).__name__, exc)
        return SERVICE_ERROR

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        finish = getattr(self.service, "finish", None)
        if finish is not None:
            try:
                finish(self.conn)
            except Exception as exc:
                log.error("service finish() failed for %s: %s: %s", self.conn.peer, type(exc).__name__, exc)
