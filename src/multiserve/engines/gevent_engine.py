"""``gevent``: a greenlet per connection, on the same blocking loop as the thread engines.

This is the only module that imports gevent. Monkey-patching is process-wide, so it happens only
in the process that runs this engine: ``python -m multiserve``/the ``multiserve`` script patch
first thing when ``--engine gevent`` is on the command line (before threading or socket are
imported there), and ``serve`` patches again (a no-op then) for embedders.
"""
from __future__ import annotations

import logging
import signal
import time

from .base import AcceptErrorLog, Engine
from .blocking import ConnectionLoop, Connections, drain, watch_idle, watchdog_period

log = logging.getLogger("multiserve")


def patch() -> None:
    """Apply gevent's monkey-patching to this process (idempotent)."""
    try:
        from gevent import monkey
    except ImportError:
        raise RuntimeError("the gevent engine needs gevent: pip install gevent") from None
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


class GeventEngine(Engine):
    name = "gevent"

    def serve(self, listener, service, *, ready, stats):
        patch()
        import gevent
        import gevent.event
        import gevent.lock
        import gevent.socket

        if not isinstance(listener, gevent.socket.socket):  # made before patching (embedding)
            listener = gevent.socket.socket(listener.family, listener.type, fileno=listener.detach())
        stop = gevent.event.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, stop.set)  # runs in the hub, not in a signal context
        connections = Connections()
        serve_connection = ConnectionLoop(service, self.config, stats, connections, kernel_timeouts=False,
                                          current=gevent.getcurrent)
        slots = gevent.lock.BoundedSemaphore(self.config.max_conns) if self.config.max_conns else None

        def run(sock, peer):
            try:
                serve_connection(sock, peer)
            finally:
                if slots is not None:
                    slots.release()

        def accept_forever():
            errors = AcceptErrorLog()
            while True:
                if slots is not None:
                    slots.acquire()  # past --max-conns, new clients wait in the backlog
                try:
                    sock, peer = listener.accept()
                except OSError as exc:
                    if slots is not None:
                        slots.release()
                    if errors.failed(exc):
                        gevent.sleep(0.1)
                        continue
                    if isinstance(exc, ConnectionAbortedError):
                        continue
                    raise
                errors.succeeded()
                gevent.spawn(run, sock, peer)

        def watchdog():
            idle, period = self.config.idle_timeout, watchdog_period(self.config.idle_timeout)
            raise_in = lambda owner, exc: owner.kill(exc, block=False)  # noqa: E731
            while True:
                gevent.sleep(period)
                watch_idle(connections, idle, time.monotonic(), raise_in)

        acceptor = gevent.spawn(accept_forever)
        watcher = gevent.spawn(watchdog)
        ready()
        stop.wait()
        acceptor.kill()
        watcher.kill()
        drain(connections, self.config.grace)
