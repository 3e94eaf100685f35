"""Services: pure request -> reply logic, and the registry that names them.

``load_service(spec, options)`` turns ``upper``, ``echo``, ``sleep:MS``, ``cpu:MS``, ``tickets``
or a user's ``package.module:Name`` into a service object.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys

from .base import Connection, Service, has_async_handle, has_sync_handle
from .builtin import Cpu, Echo, Sleep, Upper


def _number(name: str, arg: str | None) -> float:
    if arg is None:
        raise ValueError(f"service {name!r} needs a duration: {name}:MS")
    try:
        return float(arg)
    except ValueError:
        raise ValueError(f"service {name}:{arg}: MS must be a number of milliseconds") from None


def _tickets(arg, options):
    from .tickets import TicketService

    return TicketService(store_url=options.get("store") or arg or "sqlite:tickets.db")


# name -> factory(arg, options); arg is what follows "name:" in the spec, or None
BUILTIN_SERVICES = {
    "upper": lambda arg, options: Upper(),
    "echo": lambda arg, options: Echo(),
    "sleep": lambda arg, options: Sleep(_number("sleep", arg)),
    "cpu": lambda arg, options: Cpu(_number("cpu", arg)),
    "tickets": _tickets,
}


def import_object(module_name: str, attr: str, what: str):
    """``module_name.attr``, gunicorn's ``module:name``: a module in the directory the server
    was started from is importable, also through the console script (which, unlike
    ``python -m``, does not put it on sys.path). ValueError (one line, naming ``what``) if the
    module or the attribute is missing."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {what} module {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None


def load_service(spec: str, options: dict | None = None):
    """Return the service named by ``spec``.

    Raises ValueError with a one-line reason for an unknown name, a bad argument, a ``store``
    option given to a service other than ``tickets``, or a
    ``module:Name`` that cannot be imported or does not offer ``handle``/``handle_async``.
    ``module:Name`` may name a Service subclass (instantiated with no arguments), a factory
    function, or a ready instance.
    """
    options = options or {}
    name, _, arg = spec.partition(":")
    if options.get("store") and name != "tickets":
        # silently ignored, it would look as if the service used the store
        raise ValueError(f"--store is for --service tickets only, not {spec!r}")
    if name in BUILTIN_SERVICES:
        return BUILTIN_SERVICES[name](arg or None, options)
    if not arg:
        known = ", ".join(sorted(BUILTIN_SERVICES))
        raise ValueError(f"unknown service {spec!r}: use one of {known}, or package.module:Name")
    obj = import_object(name, arg, "service")
    if inspect.isclass(obj) or (callable(obj) and not hasattr(obj, "handle") and not hasattr(obj, "handle_async")):
        obj = obj()
    if not (has_sync_handle(obj) or has_async_handle(obj)):
        raise ValueError(f"{spec} is not a service: it has neither handle() nor handle_async()")
    return obj


__all__ = [
    "BUILTIN_SERVICES", "Connection", "Cpu", "Echo", "Service", "Sleep", "Upper", "load_service",
    "has_async_handle", "has_sync_handle",
]
