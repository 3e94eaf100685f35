"""The Python work an ASGI server does per HTTP request, counted in instructions (callgrind).

hot_path.py's method for HTTP: the transport is a stand-in that only counts writes, so what is
measured is the path from ``data_received`` to ``transport.write`` on a uvloop loop (the part
that differs between servers on the same loop; the syscalls under it are the same: one read,
one write per request). Both servers serve examples/hello_asgi.py and are driven the same way:
one keep-alive request in, then the driver waits (one future) until its response is written,
while the loop runs whatever tasks and callbacks the server scheduled. Instruction counts do not depend on what else the machine
runs, unlike seconds on a shared 2-core machine.

    python benchmarks/http_hot_path.py WHICH N     # WHICH: uvicorn | asyncio | asyncio-wsgi; N requests
    bash benchmarks/http_hot_path.sh               # callgrind: instructions per request, each

``uvicorn`` is uvicorn 0.54's httptools protocol (``pip install 'uvicorn[standard]'``);
``asyncio`` the asyncio engine's Channel (hybrid's workers run the same) with the ASGI app;
``asyncio-wsgi`` the same with examples/hello_wsgi.py (the thread pool hop included).
"""
import asyncio
import os
import socket
import sys

import uvloop

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"


class CountingTransport:
    """What both protocols call on their transport, doing nothing but counting responses (each
    holds the app's one ``hello``; uvicorn writes the head and a chunked body apart, multiserve
    one write with a Content-Length) and keeping the last write."""

    def __init__(self):
        self.writes = self.responses = 0
        self.last = b""
        self.written = None  # a future the driver waits on, resolved by the response's write

    def write(self, data):
        self.writes += 1
        self.responses += data.count(b"hello\n")
        self.last = data
        if self.written is not None and b"hello\n" in data:
            self.written.set_result(None)
            self.written = None

    def writelines(self, pieces):
        self.write(b"".join(pieces))

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_extra_info(self, key, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(key, default)

    def is_closing(self):
        return False

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


async def make(which, transport):
    if which == "uvicorn":
        from uvicorn.config import Config
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        from uvicorn.server import ServerState

        config = Config("examples.hello_asgi:app", http="httptools", loop="uvloop", lifespan="off",
                        access_log=False, log_level="warning")
        config.load()
        app_state = {"greeting": b"hello\n"}  # what the app's lifespan startup puts there
        protocol = HttpToolsProtocol(config, ServerState(), app_state)
        close = None
    else:
        from multiserve.apps import app_service
        from multiserve.config import ServerConfig
        from multiserve.engines.asyncio_channel import Channel
        from multiserve.engines.asyncio_engine import LoopServer
        from multiserve.protocol import protocol_factory
        from multiserve.session import SessionFactory

        app = "examples.hello_wsgi:app" if which == "asyncio-wsgi" else "examples.hello_asgi:app"
        config = ServerConfig(port=0, protocol="http", app=app, engine="asyncio")
        sessions = SessionFactory(app_service(config), protocol_factory("http", config))
        server = LoopServer(socket.socket(), sessions, config)
        await sessions.open_service_async()  # the app's lifespan startup
        protocol = Channel(server)
        close = sessions.close_service_async  # the app's lifespan shutdown
    protocol.connection_made(transport)
    return protocol, close


async def drive(data_received, transport, n):
    loop = asyncio.get_running_loop()
    for i in range(1, n + 1):
        transport.written = written = loop.create_future()
        data_received(REQUEST)
        if transport.responses < i:
            await written



def main(which: str, n: int) -> int:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    transport = CountingTransport()
    protocol, close = loop.run_until_complete(make(which, transport))
    loop.run_until_complete(drive(protocol.data_received, transport, n))
    if close is not None:
        loop.run_until_complete(close())
    assert transport.responses == n
    assert transport.last.endswith((b"\r\n\r\nhello\n", b"6\r\nhello\n\r\n0\r\n\r\n")), transport.last
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
