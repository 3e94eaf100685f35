"""Server settings: one declaration per setting (name, flag, default, parser, help).

The CLI builds its options from ``SETTINGS`` and ``ServerConfig`` holds the values, so a setting
is added in exactly one place. Engines read ``ServerConfig`` and ignore what they do not use.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Callable


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    flag: str
    default: Any
    parse: Callable[[str], Any] | None
    help: str
    action: str | None = None


CORES = os.cpu_count() or 1

SETTINGS: tuple[Setting, ...] = (
    Setting("engine", "--engine", "asyncio", str, "concurrency engine (see `multiserve engines`)"),
    Setting("service", "--service", "upper", str,
            "upper | echo | sleep:MS | cpu:MS | tickets | package.module:Name"),
    Setting("host", "--host", "127.0.0.1", str, "address to bind"),
    Setting("port", "--port", 8080, port_number, "port to bind; 0 picks a free one"),
    Setting("max_conns", "--max-conns", 0, non_negative_int,
            "open connections at most; more wait in the backlog (0: no limit beyond the OS's)"),
    Setting("max_line", "--max-line", 65536, positive_int, "longest request line, in bytes"),
    Setting("idle_timeout", "--idle-timeout", 300.0, seconds,
            "close a connection silent this long, or whose replies make no progress this long"),
    Setting("request_timeout", "--request-timeout", 30.0, seconds,
            "close a connection whose request line is still incomplete this long after its first byte"),
    Setting("grace", "--grace", 10.0, seconds, "on SIGTERM/SIGINT, how long in-flight requests may finish"),
    Setting("threads", "--threads", None, positive_int,
            "threads in the pool (threadpool: 32; asyncio/hybrid blocking calls: 16)"),
    # 1024: above Linux's old SOMAXCONN of 128 and gunicorn's default 2048 halved; the kernel caps
    # it at net.core.somaxconn anyway.
    Setting("backlog", "--backlog", 1024, positive_int, "listen backlog"),
    Setting("log_level", "--log-level", "info", str, "debug | info | warning | error"),
    Setting("uvloop", "--no-uvloop", True, None, "use the stdlib asyncio loop even if uvloop is installed",
            action="store_false"),
    Setting("store", "--store", None, str, "ticket store URL (tickets service): sqlite:PATH, json:PATH, "
            "postgresql://..., redis://..."),
    # hybrid engine
    Setting("workers", "--workers", CORES, positive_int, "hybrid: worker processes (default: cores)"),
    Setting("cpu_workers", "--cpu-workers", CORES, non_negative_int,
            "hybrid: processes for CPU-bound calls (default: cores; 0 runs them on threads)"),
    Setting("reuse_port", "--reuse-port", False, None, "hybrid: each worker binds its own SO_REUSEPORT socket",
            action="store_true"),
    Setting("worker_timeout", "--worker-timeout", 30.0, seconds,
            "hybrid: kill a worker whose event loop is stuck this long"),
    Setting("max_requests", "--max-requests", 0, non_negative_int,
            "hybrid: recycle a worker after this many requests, with jitter (0: never)"),
)


@dataclasses.dataclass
class ServerConfig:
    """Every server setting with its default. Build one from keyword arguments or from the CLI."""

    engine: str = "asyncio"
    service: str = "upper"
    host: str = "127.0.0.1"
    port: int = 8080
    max_conns: int = 0
    max_line: int = 65536
    idle_timeout: float = 300.0
    request_timeout: float = 30.0
    grace: float = 10.0
    threads: int | None = None
    backlog: int = 1024
    log_level: str = "info"
    uvloop: bool = True
    store: str | None = None
    workers: int = CORES
    cpu_workers: int = CORES
    reuse_port: bool = False
    worker_timeout: float = 30.0
    max_requests: int = 0

    def threads_or(self, default: int) -> int:
        return self.threads if self.threads is not None else default

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ServerConfig":
        return cls(**{s.name: getattr(args, s.name) for s in SETTINGS})


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    for s in SETTINGS:
        if s.action:
            parser.add_argument(s.flag, dest=s.name, action=s.action, default=s.default, help=s.help)
        else:
            parser.add_argument(s.flag, dest=s.name, type=s.parse, default=s.default, help=s.help)


# Keep the dataclass and the table in step: a setting missing from either is a bug.
assert [s.name for s in SETTINGS] == [f.name for f in dataclasses.fields(ServerConfig)]
assert all(getattr(ServerConfig, s.name) == s.default for s in SETTINGS)
