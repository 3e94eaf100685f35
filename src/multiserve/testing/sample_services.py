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


class FailingService(Service):
    """``fail ...`` raises inside ``handle``; any other line comes back upper-cased."""

    blocking = False

    def handle(self, request, conn):
        if request.startswith(b"fail"):
            raise RuntimeError("the service failed on purpose")
        return request.upper()


class FailingAsyncService(Service):
    """The coroutine form of FailingService."""

    async def handle_async(self, request, conn):
        if request.startswith(b"fail"):
            raise RuntimeError("the async service failed on purpose")
        return request.upper()


class FailingCpuService(FailingService):
    """A CPU-bound FailingService: the hybrid engine runs it in its process pool."""

    blocking = True
    cpu_bound = True


class StrReplyService(Service):
    """Returns ``str``, not bytes: a service bug every engine must turn into one ERR line."""

    blocking = False

    def handle(self, request, conn):
        return request.decode("utf-8", "replace").upper()


class FailingSetupService(Service):
    """``setup`` raises (a database that cannot be reached): the client gets one ERR line."""

    blocking = False

    def setup(self, conn):
        raise ConnectionError("the service could not set up this connection")

    def handle(self, request, conn):
        return request.upper()


class ServedSoFarService(Service):
    """``served`` is answered with how many requests this process has answered so far; any
    other line comes back upper-cased. Between two ``served`` of one client, the difference is
    how many requests the others had answered meanwhile (fairness checks, no clock involved)."""

    blocking = False

    def __init__(self):
        self.answered = 0

    def handle(self, request, conn):
        self.answered += 1
        if request == b"served\n":
            return b"%d\n" % self.answered
        return request.upper()
