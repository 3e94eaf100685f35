"""The baselines: the same line protocol served the plain way each library teaches, no multiserve.

    python -m multiserve.compare.baselines NAME [--service SPEC] [--host H] [--port 0] [--backlog N]

Each prints multiserve's ready line (``multiserve listening on HOST:PORT engine=NAME pid=PID``),
so one launcher starts engines and baselines alike, and exits 0 on SIGTERM. They answer each line
with the same service objects the engines run (``handle(line, None)``), so the service's work is
identical and only the serving differs:

- ``threadingtcp``: ``socketserver.ThreadingTCPServer``, a thread per client (closest to the
  ``thread`` and ``threadpool`` engines);
- ``forkingtcp``: ``socketserver.ForkingTCPServer``, a process per client (closest to ``process``);
- ``gevent-streamserver``: ``gevent.server.StreamServer`` with ``makefile``/``readline`` (``gevent``);
- ``asyncio-streams``: ``asyncio.start_server`` with ``readline``/``drain`` (``asyncio``, ``hybrid``);
- ``uvloop-protocol``: a bare ``asyncio.Protocol`` on uvloop, the fastest plain-Python peer;
  it answers inline in ``data_received``, so it serves only non-blocking services (upper, echo).

Both asyncio baselines run on the loop the asyncio engine uses (uvloop when installed), so a ratio
compares serving code, not event loops.

A baseline is the idiomatic server *correctly configured*, never a strawman: each takes the same
``--backlog`` as the engines (compare passes one to every server of a run), and every library
default that would cap the model is raised below, with its reason.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import socketserver
import sys

from ..engines.loops import new_event_loop
from ..server import ready_line
from ..services import has_async_handle, load_service

# ForkingMixIn blocks in waitpid once 40 children are alive (its default max_children), which
# would stall any run above 40 connections: raise it past the largest connection count we drive.
FORKING_MAX_CHILDREN = 65536
# The engines' default listen backlog (config.py's ``backlog``), and the one compare passes to
# every server of a run (compare.launcher.BACKLOG).
DEFAULT_BACKLOG = 1024


def _line_handler(service):
    """A socketserver handler class answering each line with ``service.handle``."""
    handle = service.handle

    class LineHandler(socketserver.StreamRequestHandler):
        def handle(self):
            write = self.wfile.write
            for line in self.rfile:  # readline until EOF; pipelined lines come out in order
                write(handle(line, None))

    return LineHandler


def _serve_socketserver(mixin_server, name, service, host, port, backlog):
    class Server(mixin_server):
        # socketserver listens with request_queue_size = 5: with 256 clients connecting at once,
        # most SYNs wait for a 1 s retransmit, and a 1 s cell measures that queue, not the model.
        request_queue_size = backlog
        allow_reuse_address = True  # as every real server: a restart must not wait for TIME_WAIT
        # Neither knob changes serving; both let SIGTERM end the run at once: handler threads
        # must not keep the interpreter alive, and server_close must not join every client.
        daemon_threads = True
        block_on_close = False
        max_children = FORKING_MAX_CHILDREN  # ForkingMixIn only (default 40, see above)

    server = Server((host, port), _line_handler(service))
    # SIGTERM behaves as Ctrl-C does for a socketserver script: KeyboardInterrupt in the main thread.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with server:
        print(ready_line(*server.server_address[:2], name), flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


def threadingtcp(service, host, port, backlog=DEFAULT_BACKLOG):
    return _serve_socketserver(socketserver.ThreadingTCPServer, "threadingtcp", service, host, port, backlog)


def forkingtcp(service, host, port, backlog=DEFAULT_BACKLOG):
    return _serve_socketserver(socketserver.ForkingTCPServer, "forkingtcp", service, host, port, backlog)


def gevent_streamserver(service, host, port, backlog=DEFAULT_BACKLOG):
    # Only time.sleep needs to yield to the hub (the sleep service); the server's sockets are
    # gevent's own. patch_all this late (threading already imported) would warn and buy nothing.
    from gevent import monkey

    monkey.patch_time()
    import gevent
    import gevent.event
    from gevent.server import StreamServer

    handle = service.handle

    def client(sock, address):
        with sock.makefile("rb") as rfile:
            for line in rfile:
                sock.sendall(handle(line, None))

    # StreamServer's own backlog default is 256 (gevent.server.StreamServer.backlog): the run's.
    # Its spawn default is one unbounded greenlet per client, the model itself: left as it is.
    server = StreamServer((host, port), client, backlog=backlog)
    server.start()
    stop = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)
    print(ready_line(*server.address[:2], "gevent-streamserver"), flush=True)
    stop.wait()
    server.stop(timeout=1)
    return 0


def _answer_async(service):
    """The idiomatic asyncio call of ``service``: await a coroutine, run blocking code on the
    default executor, call cheap code inline."""
    if has_async_handle(service):
        return lambda line: service.handle_async(line, None)
    if getattr(service, "blocking", True) or getattr(service, "cpu_bound", False):
        loop = asyncio.get_running_loop()
        return lambda line: loop.run_in_executor(None, service.handle, line, None)

    async def inline(line):
        return service.handle(line, None)

    return inline


async def _until_signal(server, name):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(ready_line(*server.sockets[0].getsockname()[:2], name), flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


async def _asyncio_streams(service, host, port, backlog):
    answer = _answer_async(service)

    async def client(reader, writer):
        try:
            while line := await reader.readline():
                writer.write(await answer(line))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(client, host, port, backlog=backlog)  # asyncio's default: 100
    await _until_signal(server, "asyncio-streams")


class _LineProtocol(asyncio.Protocol):
    """Split the bytes into lines, answer the complete ones inline, keep the partial rest."""

    def __init__(self, handle):
        self.handle = handle
        self.partial = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        data = self.partial + data
        end = data.rfind(b"\n") + 1
        self.partial = data[end:]
        if end:
            handle = self.handle
            self.transport.write(b"".join([handle(line, None) for line in data[:end].splitlines(True)]))

    def eof_received(self):
        if self.partial:
            self.transport.write(self.handle(self.partial, None))
        return False  # close


async def _uvloop_protocol(service, host, port, backlog):
    if getattr(service, "blocking", True) or getattr(service, "cpu_bound", False):
        raise ValueError("uvloop-protocol answers inline: it serves only non-blocking services (upper, echo)")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _LineProtocol(service.handle), host, port, backlog=backlog)
    await _until_signal(server, "uvloop-protocol")


def _on_loop(coroutine_function):
    def run(service, host, port, backlog=DEFAULT_BACKLOG):
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(coroutine_function(service, host, port, backlog))
        return 0

    return run


# name -> runner(service, host, port, backlog) -> exit code
BASELINES = {
    "threadingtcp": threadingtcp,
    "forkingtcp": forkingtcp,
    "gevent-streamserver": gevent_streamserver,
    "asyncio-streams": _on_loop(_asyncio_streams),
    "uvloop-protocol": _on_loop(_uvloop_protocol),
}

# engine -> the baseline its figures are divided by (the same concurrency model, served plainly)
CLOSEST_BASELINE = {
    "thread": "threadingtcp",
    "threadpool": "threadingtcp",
    "process": "forkingtcp",
    "gevent": "gevent-streamserver",
    "asyncio": "asyncio-streams",
    "hybrid": "asyncio-streams",
    "multiloop": "asyncio-streams",
}

# The baseline the best engine is held to for each service it can serve (the bar).
FASTEST_BASELINE = "uvloop-protocol"


def serves(baseline: str, service_spec: str) -> bool:
    """Whether ``baseline`` can serve ``service_spec`` at all (uvloop-protocol: inline only)."""
    if baseline != "uvloop-protocol":
        return True
    service = load_service(service_spec)
    return not getattr(service, "blocking", True) and not getattr(service, "cpu_bound", False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multiserve.compare.baselines",
                                     description="a baseline server for the upper line protocol")
    parser.add_argument("name", choices=sorted(BASELINES))
    parser.add_argument("--service", default="upper")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG,
                        help=f"listen backlog (default {DEFAULT_BACKLOG}, the engines' default)")
    args = parser.parse_args(argv)
    try:
        service = load_service(args.service)
        return BASELINES[args.name](service, args.host, args.port, args.backlog)
    except (ValueError, OSError) as exc:
        print(f"baseline {args.name}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
