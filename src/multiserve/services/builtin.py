"""The built-in services: examples of the interface and the workloads multiserve measures."""
from __future__ import annotations

import time

from .base import Service


class Upper(Service):
    """Each line comes back as ``bytes.upper()`` of it: non-ASCII bytes pass through unchanged."""

    blocking = False

    def handle(self, request, conn):
        return request.upper()


class Echo(Service):
    """Each line comes back unchanged."""

    blocking = False

    def handle(self, request, conn):
        return request


class Sleep(Service):
    """An IO-bound request: waits ``ms`` as a blocking call would (a database query), then upper.

    ``handle`` blocks the calling thread; ``handle_async`` awaits ``asyncio.sleep``, so each
    engine waits its own idiomatic way (under gevent, ``time.sleep`` is cooperative).
    """

    blocking = True

    def __init__(self, ms: float):
        if ms < 0:
            raise ValueError("sleep:MS needs MS >= 0")
        self.ms = ms
        self.seconds = ms / 1000.0

    def handle(self, request, conn):
        time.sleep(self.seconds)
        return request.upper()

    async def handle_async(self, request, conn):
        import asyncio  # already imported wherever a coroutine runs; kept out of forked servers

        await asyncio.sleep(self.seconds)
        return request.upper()


def burn_cpu(seconds: float) -> int:
    """Pure-Python work for about ``seconds`` of CPU time (thread CPU clock, so a waiting thread
    under the GIL does not count its wait as work)."""
    clock = time.thread_time
    deadline = clock() + seconds
    x = 0
    while clock() < deadline:
        for i in range(1000):
            x = (x * 31 + i) & 0xFFFFFFFF
    return x


class Cpu(Service):
    """A CPU-bound request: burns about ``ms`` of pure-Python CPU, then upper."""

    blocking = True
    cpu_bound = True

    def __init__(self, ms: float):
        if ms < 0:
            raise ValueError("cpu:MS needs MS >= 0")
        self.ms = ms
        self.seconds = ms / 1000.0

    def handle(self, request, conn):
        burn_cpu(self.seconds)
        return request.upper()
