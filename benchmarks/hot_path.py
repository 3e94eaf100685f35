"""The Python work an event-loop server does per request, counted in instructions (callgrind).

The transport is a stand-in that only counts writes, so what is measured is the Python path
from ``data_received`` to ``transport.write``: the part that differs between servers on the same
loop (the syscalls under it are the same: one read, one write per request). Instruction counts
do not depend on what else the machine runs, unlike seconds on a shared 2-core machine.

    python benchmarks/hot_path.py WHICH N        # WHICH: peer | engine | engine-metrics
    bash benchmarks/hot_path.sh                  # callgrind: instructions per request (WHICH="..." to choose)

``peer`` is the uvloop-protocol baseline's ``data_received`` (multiserve.compare.baselines);
``engine`` the asyncio engine's (hybrid's workers run the same); ``engine-metrics`` the same with
``--metrics-port``'s counting on (the session the server then makes; no scrape).
"""
import asyncio
import socket
import sys

import uvloop

from multiserve.services import Upper


class CountingTransport:
    def __init__(self):
        self.writes = 0

    def write(self, data):
        self.writes += 1

    writelines = write

    def set_write_buffer_limits(self, high):
        pass

    def get_extra_info(self, key):
        return ("127.0.0.1", 1)

    def is_closing(self):
        return False


async def make(which, transport):
    if which == "peer":
        from multiserve.compare.baselines import _LineProtocol

        protocol = _LineProtocol(Upper().handle)
    else:
        from multiserve.config import ServerConfig
        from multiserve.engines.asyncio_channel import Channel
        from multiserve.engines.asyncio_engine import LoopServer
        from multiserve.protocol import protocol_factory
        from multiserve.session import SessionFactory

        config = ServerConfig(port=0)
        observer = None
        if which == "engine-metrics":
            from multiserve.meter import LocalMeter
            from multiserve.observed import Observer

            observer = Observer(LocalMeter())
        sessions = SessionFactory(Upper(), protocol_factory("line", config), observer)
        server = LoopServer(socket.socket(), sessions, config)
        protocol = Channel(server)
    protocol.connection_made(transport)
    return protocol


def main(which: str, n: int) -> int:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    transport = CountingTransport()
    data_received = loop.run_until_complete(make(which, transport)).data_received
    data = b"hello world 042\n"
    for _ in range(n):
        data_received(data)
    assert transport.writes == n
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
