"""Run one service under one engine: what ``multiserve serve`` and ``multiserve.serve`` do."""
from __future__ import annotations

import logging
import os
import sys

from .config import ServerConfig
from .engines import engine_class
from .engines.base import ServeStats
from .services import load_service
from .sockets import address_of, bind_listener

log = logging.getLogger("multiserve")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s multiserve[%(process)d] %(message)s",
        stream=sys.stderr,
    )


def ready_line(host: str, port: int, engine: str) -> str:
    """The line a server prints once, when it accepts; tests and tools parse it."""
    return f"multiserve listening on {host}:{port} engine={engine} pid={os.getpid()}"


def serve(service=None, *, engine: str = "asyncio", config: ServerConfig | None = None, on_ready=None, **settings) -> ServeStats:
    """Serve ``service`` (an object, or a spec such as ``"sleep:10"``) until SIGTERM/SIGINT.

    Settings are ServerConfig's fields (``port=8080``, ``max_conns=...``). Prints the ready line
    to stdout (or calls ``on_ready(host, port)`` instead), drains gracefully on the signal and
    returns the counts. Raises ValueError for a bad service or engine, OSError if it cannot bind.
    """
    config = config or ServerConfig(engine=engine, **settings)
    if service is None:
        service = config.service
    if isinstance(service, str):
        service = load_service(service, {"store": config.store})
    engine_obj = engine_class(config.engine)(config)
    listener = bind_listener(config.host, config.port, config.backlog,
                             reuse_port=config.reuse_port and config.engine == "hybrid")
    host, port = address_of(listener)

    def ready():
        if on_ready is not None:
            on_ready(host, port)
        else:
            print(ready_line(host, port, config.engine), flush=True)

    stats = ServeStats()
    opened = getattr(service, "open", None)
    if opened is not None and config.engine != "hybrid":  # hybrid opens in each worker
        opened()
    try:
        engine_obj.serve(listener, service, ready=ready, stats=stats)
    finally:
        listener.close()
        closer = getattr(service, "close", None)
        if closer is not None and config.engine != "hybrid":
            closer()
    log.info("stopped: %s", stats.summary())
    return stats
