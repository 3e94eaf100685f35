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


def _whole(value) -> int:
    """``int(value)``, refusing what ``int`` would silently change: a bool (TOML's ``true``) or a
    float with a fraction (``2.5``)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"must be a whole number, got {value!r}")
    return int(value)


def positive_int(value) -> int:
    number = _whole(value)
    if number < 1:
        raise ValueError(f"must be >= 1, got {number}")
    return number


def non_negative_int(value) -> int:
    number = _whole(value)
    if number < 0:
        raise ValueError(f"must be >= 0, got {number}")
    return number


def port_number(value) -> int:
    number = _whole(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"must be 0..65535, got {number}")
    return number


def seconds(value) -> float:
    if isinstance(value, bool):
        raise ValueError(f"must be a number of seconds, got {value!r}")
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be > 0 seconds, got {number}")
    return number


def text(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def one_of(*choices: str, aliases: dict | None = None) -> Callable[[Any], str]:
    """One of ``choices``, in any case (``INFO`` is ``info``); ``aliases`` maps other spellings
    (ssl's ``2`` for ``required``) to a choice."""
    def check(value) -> str:
        key = value.lower() if isinstance(value, str) else value
        key = (aliases or {}).get(key if not isinstance(key, bool) else None, key)
        if key not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return key
    return check


def octal_mode(value) -> int:
    """A file mode: ``660``/``"0o660"`` on the command line or in a TOML string (octal), or a
    TOML integer written ``0o660``."""
    if isinstance(value, str):
        text = value.lower().removeprefix("0o")
        try:
            value = int(text, 8)
        except ValueError:
            raise ValueError(f"must be an octal file mode such as 660, got {value!r}") from None
    number = _whole(value)
    if not 0 <= number <= 0o777:
        raise ValueError(f"must be an octal file mode 000..777, got {oct(number)}")
    return number


def existing_file(value) -> str:
    path = text(value)
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    return path


def bind_addresses(value) -> tuple:
    """``--bind``: one address or a list of them (``HOST:PORT``, ``[::1]:PORT``, ``unix:PATH``,
    ``fd://N``), each parsed by ``multiserve.sockets.parse_bind``; returns them normalized, as a
    tuple, in order. Every engine serves the same service on all of them
    (``Engine.serve(listeners, ...)``); the first is the ready line's ``on`` address."""
    from .sockets import parse_bind

    items = [value] if isinstance(value, str) else list(value or ())
    return tuple(str(parse_bind(item)) for item in items)


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
    action: str | None = None  # argparse's store_true/store_false for on/off flags, append for lists
    shown_default: str | None = None  # what --help says the default is, when str(default) says it badly


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
            "HTTP: how --app is called: wsgi (PEP 3333), asgi (ASGI 3: asyncio, hybrid, multiloop), auto (asgi for a coroutine function)"),
    # 64 KiB: issue 12's default, as --max-line; above h11's 16 KiB and nginx's 4 x 8 KiB
    Setting("max_header", "--max-header", 65536, positive_int,
            "HTTP: longest request line + headers, in bytes (431 past it)"),
    # 1 MiB: nginx's client_max_body_size default; a request body is held whole in memory
    Setting("max_body", "--max-body", 1 << 20, non_negative_int,
            "HTTP: largest request body, in bytes (413 past it)"),
    Setting("host", "--host", "127.0.0.1", text, "address to bind (unless --bind is given)"),
    Setting("port", "--port", 8080, port_number, "port to bind; 0 picks a free one (unless --bind is given)"),
    Setting("bind", "--bind", (), bind_addresses,
            "where to listen instead of --host/--port: HOST:PORT, [::1]:PORT, unix:PATH or fd://N "
            "(an inherited listening socket); repeat it to serve on several addresses at once; "
            "systemd socket activation (LISTEN_FDS) overrides it",
            action="append", shown_default="--host:--port"),
    Setting("unix_mode", "--unix-mode", None, optional(octal_mode),
            "mode of a unix:PATH socket file, in octal such as 660", shown_default="what the umask leaves"),
    Setting("certfile", "--certfile", None, optional(existing_file), "serve TLS: the certificate chain (PEM)"),
    Setting("keyfile", "--keyfile", None, optional(existing_file), "TLS: the private key (PEM)",
            shown_default="in the certfile"),
    Setting("ca_certs", "--ca-certs", None, optional(existing_file),
            "TLS: CA certificates (PEM) that client certificates are checked against"),
    Setting("cert_reqs", "--cert-reqs", "none",
            one_of("none", "optional", "required", aliases={0: "none", 1: "optional", 2: "required",
                                                            "0": "none", "1": "optional", "2": "required"}),
            "TLS: ask for a client certificate: none, optional or required (ssl's 0, 1, 2)"),
    Setting("max_conns", "--max-conns", 0, non_negative_int,
            "open connections at most; more wait in the backlog (0: no limit beyond the OS's)"),
    Setting("max_line", "--max-line", 65536, positive_int, "longest request line, in bytes"),
    Setting("idle_timeout", "--idle-timeout", 300.0, seconds,
            "close a connection silent this long, or whose replies make no progress this long"),
    Setting("request_timeout", "--request-timeout", 30.0, seconds,
            "close a connection whose request is still incomplete this long after its first byte"),
    Setting("grace", "--grace", 10.0, seconds, "on SIGTERM/SIGINT, how long in-flight requests may finish"),
    Setting("threads", "--threads", None, optional(positive_int),
            "threads in the pool (threadpool: 32; asyncio/hybrid blocking calls: 16; gevent: coroutine services, 16)"),
    # 1024: above Linux's old SOMAXCONN of 128 and half gunicorn's 2048; the kernel caps it at
    # net.core.somaxconn anyway. socketserver's 5 is what made its servers look slow (issue 10).
    Setting("backlog", "--backlog", 1024, positive_int, "listen backlog"),
    Setting("log_level", "--log-level", "info", one_of("debug", "info", "warning", "error"), "log level"),
    # operating (issue 15): off by default, and then free (the plain session runs)
    Setting("metrics_port", "--metrics-port", None, optional(port_number),
            "serve Prometheus metrics on this port at /metrics (0 picks a free one; the ready line names it)",
            shown_default="off"),
    Setting("metrics_host", "--metrics-host", "127.0.0.1", text, "address the metrics port binds"),
    Setting("access_log", "--access-log", None, optional(text),
            "write an access log to FILE, or - for standard output: a line per HTTP request, "
            "or per line-protocol connection", shown_default="off"),
    Setting("uvloop", "--no-uvloop", True, flag, "use the stdlib asyncio loop even if uvloop is installed",
            action="store_false"),
    Setting("store", "--store", None, optional(text), "ticket store URL (tickets service): sqlite:PATH, "
            "json:PATH, postgresql://..., redis://..."),
    # hybrid engine
    Setting("workers", "--workers", CORES, positive_int,
            "hybrid: worker processes; multiloop: event-loop threads; one per core by default"),
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
    for names, check in TOGETHER:
        problem = check(self)
        if problem:
            raise SettingError(f"{' / '.join(SETTINGS_BY_NAME[n].flag for n in names)}: {problem}")


# Settings that only make sense together: (names, check(config) -> None or what is wrong).
TOGETHER = (
    (("keyfile", "certfile"), lambda c: c.keyfile and not c.certfile and "a keyfile needs a certfile"),
    (("ca_certs", "certfile"), lambda c: c.ca_certs and not c.certfile and "client certificates need TLS (a certfile)"),
    (("cert_reqs", "ca_certs"), lambda c: c.cert_reqs != "none" and not c.ca_certs
     and f"--cert-reqs {c.cert_reqs} needs --ca-certs to check client certificates against"),
)


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


def flags_from_args(args: argparse.Namespace) -> dict:
    """The settings given on the command line (``add_server_arguments`` leaves the others out of
    ``args``, so a flag that repeats its default still wins over a config file)."""
    return {s.name: getattr(args, s.name) for s in SETTINGS if hasattr(args, s.name)}


def config_from_args(args: argparse.Namespace) -> "ServerConfig":
    return ServerConfig(**flags_from_args(args))


def argparse_type(validate):
    def parse(value):
        try:
            return validate(value)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _help(s: Setting) -> str:
    if s.shown_default is not None:
        shown = s.shown_default
    elif s.action in ("store_true", "store_false"):
        shown = "off"  # the flag, not the setting: --no-uvloop is off, so uvloop is used
    else:
        shown = "unset" if s.default is None else s.default
    return f"{s.help} (default: {shown})"


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per setting. Defaults are left out of the namespace (``argparse.SUPPRESS``):
    ``flags_from_args`` then knows which settings the command line gave."""
    for s in SETTINGS:
        if s.action in ("store_true", "store_false"):
            parser.add_argument(s.flag, dest=s.name, action=s.action, default=argparse.SUPPRESS, help=_help(s))
        elif s.action == "append":  # each value is checked with the rest, by the setting's validator
            parser.add_argument(s.flag, dest=s.name, action="append", default=argparse.SUPPRESS, help=_help(s))
        else:
            parser.add_argument(s.flag, dest=s.name, type=argparse_type(s.validate), default=argparse.SUPPRESS,
                                help=_help(s))
