"""A service of your own, served by multiserve under any engine (the README's example).

    multiserve serve --service examples.notes:Notes --engine gevent --port 8080
    python examples/notes.py          # the same, embedded: multiserve.serve(...)
"""
import asyncio

import multiserve


class Notes(multiserve.Service):
    """``SET key value`` / ``GET key``, private to each connection; any other line comes back upper-cased."""

    blocking = False  # answers from memory, never blocks: event-loop engines may run it on the loop

    def setup(self, conn):  # once per client, like socketserver's setup()
        conn.state.notes = {}

    def handle(self, request, conn):  # once per request line (it ends in b"\n", except a last one at EOF)
        words = request.split(maxsplit=2)
        if len(words) == 3 and words[0] == b"SET":
            conn.state.notes[words[1]] = words[2].rstrip(b"\r\n")
            return b"OK\n"
        if len(words) == 2 and words[0] == b"GET":
            return conn.state.notes.get(words[1], b"") + b"\n"
        return request.upper()

    def finish(self, conn):  # once per client, after errors too
        conn.state.notes.clear()


class SlowUpper(multiserve.Service):
    """A coroutine service: awaits as a database client would. Event-loop engines await it; the
    thread, process and gevent engines run it on an event loop of their own."""

    async def handle_async(self, request, conn):
        await asyncio.sleep(0.01)
        return request.upper()


if __name__ == "__main__":
    multiserve.serve(Notes(), engine="gevent", port=8080)
