"""Services a user could write, used by the conformance suite through ``--service module:Name``."""
from __future__ import annotations

import asyncio

from multiserve import Service


class CountingService(Service):
    """Per-connection state: each reply is prefixed with the request's number on its connection."""

    blocking = False

    def setup(self, conn):
        conn.state.count = 0

    def handle(self, request, conn):
        conn.state.count += 1
        return b"%d " % conn.state.count + request.upper()


class AsyncReverseService(Service):
    """Async only: awaits a timer, then replies with the line reversed (newline kept last)."""

    async def handle_async(self, request, conn):
        await asyncio.sleep(0.001)
        body = request.rstrip(b"\n")
        return body[::-1] + request[len(body):]
