"""Run one service under one engine: what ``multiserve serve`` and ``multiserve.serve`` do.

This is the one place that installs the stop signals (SIGTERM/SIGINT: ``multiserve.stop``),
binds the listeners, opens the service and prints the ready line; the engine only serves.
"""
from __future__ import annotations

import logging
import os
import sys

from . import interpreter
from .config import make_config
from .engines import engine_class, unavailable
from .engines.base import ServeStats
from .protocol import protocol_factory
from .services import load_service
from .session import SessionFactory, close_coroutine_runners
from .sockets import close_all, open_listeners
from .stop import Stop, stop_on_signals
from .tls import server_context

log = logging.getLogger(__name__)
# Engines whose workers open and close the service themselves, after their fork.
OPENS_IN_WORKERS = {"hybrid"}
# Where an engine serves its sessions, for the metrics (multiserve.meter.METERS); others: "threads".
SERVES_IN = {"hybrid": "workers", "process": "connection processes"}
# Engines that monkey-patch the process when they start serving: the metrics server starts once
# they accept (in ready()), so that its thread and sockets are the patched, cooperative ones.
PATCHES_AT_SERVE = {"gevent"}


def make_observer(config):
    """None, or the Observer of ``--metrics-port``/``--access-log``."""
    if config.metrics_port is None and config.access_log is None:
        return None
    from .access_log import AccessLog
    from .meter import make_meter
    from .observed import Observer

    serves_in = SERVES_IN.get(config.engine, "threads")
    meter = make_meter(serves_in, config.workers) if config.metrics_port is not None else None
    access_log = None
    if config.access_log is not None:
        access_log = AccessLog(config.access_log, sync=serves_in == "connection processes")
        access_log.check()  # here, before serving: workers open it after their fork
    return Observer(meter, access_log)


def start_metrics(config, observer):
    """The metrics server (multiserve.metrics), or None without --metrics-port."""
    if config.metrics_port is None:
        return None
    from .metrics import MetricsServer

    try:
        return MetricsServer(observer.meter, config.metrics_host, config.metrics_port)
    except OSError as exc:
        raise OSError(exc.errno, f"--metrics-port: cannot bind {config.metrics_host}:{config.metrics_port}: "
                                 f"{exc.strerror}") from None


def configure_logging(level: str) -> None:
    """One line per record, naming the process (several serve one port under hybrid)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s multiserve[%(process)d] %(message)s",
        stream=sys.stderr,
    )


def ready_line(host: str, port: int | None, engine: str, also=()) -> str:
    """The line a server prints once, when it accepts; tests and tools parse it. ``host`` alone
    (``port`` None) is a whole address: ``unix:/run/x.sock``, ``[::1]:8080``. ``also``: the
    other addresses it serves on (repeated ``--bind``, several systemd sockets), given after the
    pid as ``also=B,C`` so that ``on A`` stays the first address for every parser. It ends with
    the interpreter and the GIL's state *now*, after every import (``python=3.13.5t gil=off``)."""
    where = host if port is None else f"{host}:{port}"
    others = f" also={','.join(also)}" if also else ""
    return (f"multiserve listening on {where} engine={engine} pid={os.getpid()}{others} "
            f"{interpreter.ready_fields()}")


def serve(service=None, *, engine: str = "asyncio", config=None, on_ready=None, stop: Stop | None = None,
          **settings) -> ServeStats:
    """Serve ``service`` (an object, or a spec such as ``"sleep:10"``) until stopped.

    Settings are ServerConfig's fields (``port=8080``, ``max_conns=...``), validated first: a bad
    or unknown one raises :class:`~multiserve.config.SettingError` (a ValueError) naming it.
    Prints the ready line to stdout (or calls ``on_ready(host, port)`` instead, of the first
    address when there are several; for a unix socket ``on_ready("unix:PATH", None)``). Stops on
    SIGTERM/SIGINT when called on the main thread, or when ``stop.set()`` is called (pass your
    own :class:`~multiserve.stop.Stop` to stop it from another thread); then drains gracefully,
    logs the ``stopped: ...`` summary and returns the counts as a
    :class:`~multiserve.engines.base.ServeStats` (``connections``, ``requests``, ``errors``).
    Raises ValueError for a bad service, OSError if it cannot bind.
    """
    config = config or make_config(engine=engine, **settings)
    if not logging.getLogger().handlers and not logging.getLogger("multiserve").handlers:
        configure_logging(config.log_level)  # embedded: the summary line is still printed
    if service is None and config.app is not None:
        from .apps import app_service

        service = app_service(config)
    elif service is None and config.protocol == "http":
        raise ValueError("--protocol http serves an application: add --app module:name")
    if service is None:
        service = config.service
    if isinstance(service, str):
        service = load_service(service, {"store": config.store})
    if reason := unavailable(config.engine):
        raise RuntimeError(f"engine {config.engine} is unavailable on this interpreter: {reason}")
    observer = make_observer(config)
    sessions = SessionFactory(service, protocol_factory(config.protocol, config), observer)
    # before binding: a certificate that cannot be used is one error line, and nothing listens
    engine_obj = engine_class(config.engine)(config, tls=server_context(config))
    bound = open_listeners(config)
    address = bound[0].address
    shared = [b.address for b in bound if b.address.kind != "tcp"]
    if config.reuse_port and config.engine == "hybrid" and shared:
        close_all(bound)
        raise ValueError(f"--reuse-port: each worker binds its own HOST:PORT socket; it cannot share {shared[0]}")

    metrics = [None]
    patches = config.engine in PATCHES_AT_SERVE

    def ready():
        if patches:
            metrics[0] = start_metrics(config, observer)
        interpreter.warn_if_gil_reenabled(f"this {config.engine} server")
        if on_ready is None:
            print(ready_line(str(address), None, config.engine, [str(b.address) for b in bound[1:]])
                  + (" tls" if engine_obj.tls else "")
                  + (f" metrics={metrics[0].describe()}" if metrics[0] is not None else ""), flush=True)
        elif address.kind == "tcp":
            on_ready(address.host, address.port)
        else:
            on_ready(str(address), None)

    own_stop = stop is None
    stop = stop or Stop()
    in_workers = config.engine in OPENS_IN_WORKERS
    try:
        if not patches:
            metrics[0] = start_metrics(config, observer)
        if not in_workers:
            sessions.open_service()
        try:
            with stop_on_signals(stop):
                stats = engine_obj.serve([b.sock for b in bound], sessions, ready=ready, stop=stop)
        finally:
            close_coroutine_runners()
            if not in_workers:
                sessions.close_service()
    finally:
        close_all(bound)  # and their unix socket files are removed
        if metrics[0] is not None:
            metrics[0].close()
        if own_stop:
            stop.close()
    log.info("stopped: %s", stats.summary())
    return stats
