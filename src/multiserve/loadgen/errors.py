"""Errors by kind: the one mapping from a socket exception to a short name (``refused``,
``reset``, ``timeout``, ...), shared by ``bench`` and ``tickets rush`` so both count alike."""
from __future__ import annotations

import asyncio
import errno
import socket

# What a user cares about, reported zero or not (``multiserve bench --json``'s "outcomes" and
# ``multiserve drill``): requests lost in flight, graceful closes, refused connects, resets, and
# requests timed out. What each counts exactly: :mod:`multiserve.loadgen.worker`.
OUTCOMES = ("lost", "closed", "refused", "reset", "timeout")

_ERROR_KINDS = (
    (ConnectionRefusedError, "refused"),
    (ConnectionResetError, "reset"),
    (BrokenPipeError, "reset"),
    (ConnectionAbortedError, "reset"),
    (asyncio.TimeoutError, "timeout"),
    (TimeoutError, "timeout"),
    (socket.timeout, "timeout"),
    (socket.gaierror, "resolve"),
)


def error_kind(exc: BaseException) -> str:
    """A short lower-case name for ``exc``: its own ``kind`` attribute, a kind above, else the
    errno's name, else the class."""
    if isinstance(getattr(exc, "kind", None), str):
        return exc.kind
    for cls, kind in _ERROR_KINDS:
        if isinstance(exc, cls):
            return kind
    if isinstance(exc, OSError) and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno].lower()
    return type(exc).__name__.lower()


def by_kind(counts: dict[str, int]) -> str:
    """``{"refused": 20, "reset": 1}`` -> ``"20 refused, 1 reset"`` (most frequent first)."""
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
