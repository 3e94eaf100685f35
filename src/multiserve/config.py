"""Server settings: each declared once (name, flag, default, validator, help), as gunicorn's
``config.py`` does. ``ServerConfig`` is generated from the table, the CLI builds its options from
it, and every entry path (the CLI, ``multiserve.serve(**settings)``, ``ServerConfig(...)``) runs
the same validators, so a bad value is refused at once with one line naming the setting.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Callable


class SettingError(ValueError):
    """A setting's value is refused; the message names the setting."""


def positive_int(value) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be >= 1, got {number}")
    return number


def non_negative_int(value) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must be >= 0, got {number}")
    return number


def port_number(value) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"must be 0..65535, got {number}")
    return number


def seconds(value) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be > 0 seconds, got {number}")
    return number


def text(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def one_of(*choices: str) -> Callable[[Any], str]:
    def check(value) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value
    return check


def registered(kind: str, registry_path: str) -> Callable[[Any], str]:
    """A name from a registry (engines, protocols), looked up when checked, not at import."""
    def check(value) -> str:
        import importlib

        module_name, _, attr = registry_path.partition(":")
        names = getattr(importlib.import_module(module_name), attr)
        if value not in names:
            raise ValueError(f"unknown {kind} {value!r}: use one of {', '.join(names)}")
        return value
    return check


def optional(validate):
    return lambda value: None if value is None else validate(value)


def flag(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be True or False, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    flag: str
    default: Any
    validate: Callable[[Any], Any]
    help: str
    action: str | None = None  # argparse's store_true/store_false for on/off flags


CORES = os.cpu_count() or 1

SETTINGS: tuple[Setting, ...] = (
    Setting("engine", "--engine", "asyncio", registered("engine", "multiserve.engines:ENGINES"),
            "concurrency engine (see `multiserve engines`)"),
    Setting("protocol", "--protocol", "line", registered("protocol", "multiserve.protocol:PROTOCOLS"),
            "wire protocol"),
    Setting("service", "--service", "upper", text,
            "upper | echo | sleep:MS | cpu:MS | tickets | package.module:Name"),
    # HTTP (issue 12)
    Setting("app", "--app", None, optional(text), "HTTP: the application to serve, module:name (needs --protocol http)"),
    Setting("interface", "--interface", "auto", one_of("auto", "wsgi", "asgi"),
            "HTTP: how --app is called: wsgi (PEP 3333), asgi (ASGI 3: asyncio, hybrid), auto (asgi for a coroutine function)"),
    # 64 KiB: issue 12's default, as --max-line; above h11's 16 KiB and nginx's 4 x 8 KiB
    Setting("max_header", "--max-header", 65536, positive_int,
            "HTTP: longest request line + headers, in bytes (431 past it)"),
    # 1 MiB: nginx's client_max_body_size default; a request body is held whole in memory
    Setting("max_body", "--max-body", 1 << 20, non_negative_int,
            "HTTP: largest request body, in bytes (413 past it)"),
    Setting("host", "--host", "127.0.0.1", text, "address to bind"),
    Setting("port", "--port", 8080, port_number, "port to bind; 0 picks a free one"),
    Setting("max_conns", "--max-conns", 0, non_negative_int,
            "open connections at most; more wait in the backlog (0: no limit beyond the OS's)"),
    Setting("max_line", "--max-line", 65536, positive_int, "longest request line, in bytes"),
    Setting("idle_timeout", "--idle-timeout", 300.0, seconds,
            "close a connection silent this long, or whose replies make no progress this long"),
    Setting("request_timeout", "--request-timeout", 30.0, seconds,
            "close a connection whose request is still incomplete this long after its first byte"),
    Setting("grace", "--grace", 10.0, seconds, "on SIGTERM/SIGINT, how long in-flight requests may finish"),
    Setting("threads", "--threads", None, optional(positive_int),
            "threads in the pool (threadpool: 32; asyncio/hybrid blocking calls: 16)"),
    # 1024: above Linux's old SOMAXCONN of 128 and half gunicorn's 2048; the kernel caps it at
    # net.core.somaxconn anyway. socketserver's 5 is what made its servers look slow (issue 10).
    Setting("backlog", "--backlog", 1024, positive_int, "listen backlog"),
    Setting("log_level", "--log-level", "info", one_of("debug", "info", "warning", "error"), "log level"),
    Setting("uvloop", "--no-uvloop", True, flag, "use the stdlib asyncio loop even if uvloop is installed",
            action="store_false"),
    Setting("store", "--store", None, optional(text), "ticket store URL (tickets service): sqlite:PATH, "
            "json:PATH, postgresql://..., redis://..."),
    # hybrid engine
    Setting("workers", "--workers", CORES, positive_int, "hybrid: worker processes, one per core by default"),
    Setting("cpu_workers", "--cpu-workers", CORES, non_negative_int,
            "hybrid: processes for CPU-bound calls per worker, one per core by default (0 runs them on threads)"),
    Setting("reuse_port", "--reuse-port", False, flag, "hybrid: each worker binds its own SO_REUSEPORT socket",
            action="store_true"),
    Setting("worker_timeout", "--worker-timeout", 30.0, seconds,
            "hybrid: kill a worker whose event loop is stuck this long"),
    Setting("max_requests", "--max-requests", 0, non_negative_int,
            "hybrid: recycle a worker after this many requests, with jitter (0: never)"),
)
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


def _validate(self) -> None:
    for s in SETTINGS:
        value = getattr(self, s.name)
        try:
            checked = s.validate(value)
        except (TypeError, ValueError) as exc:
            raise SettingError(f"{s.name} ({s.flag}): {exc}") from None
        object.__setattr__(self, s.name, checked)


def _threads_or(self, default: int) -> int:
    return self.threads if self.threads is not None else default


ServerConfig = dataclasses.make_dataclass(
    "ServerConfig",
    [(s.name, Any, dataclasses.field(default=s.default)) for s in SETTINGS],
    namespace={
        "__post_init__": _validate,
        "threads_or": _threads_or,
        "__doc__": "Every server setting, validated when made (SettingError names a bad one). "
                   "Fields and defaults: ``multiserve.config.SETTINGS``.",
    },
)
ServerConfig.__module__ = __name__


def make_config(**settings) -> "ServerConfig":
    """``ServerConfig(**settings)``, with an unknown name refused as a SettingError."""
    unknown = sorted(set(settings) - set(SETTINGS_BY_NAME))
    if unknown:
        raise SettingError(f"unknown setting {unknown[0]!r}: settings are {', '.join(SETTINGS_BY_NAME)}")
    return ServerConfig(**settings)


def config_from_args(args: argparse.Namespace) -> "ServerConfig":
    return ServerConfig(**{s.name: getattr(args, s.name) for s in SETTINGS})


def _argparse_type(validate):
    def parse(value):
        try:
            return validate(value)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    for s in SETTINGS:
        help_text = f"{s.help} (default: {s.default})"
        if s.action:
            parser.add_argument(s.flag, dest=s.name, action=s.action, default=s.default, help=help_text)
        else:
            parser.add_argument(s.flag, dest=s.name, type=_argparse_type(s.validate), default=s.default,
                                help=help_text)
