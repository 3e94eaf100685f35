"""Idle and request deadlines, for every engine: when a connection is past one, and what it gets.

``--idle-timeout``: a connection silent this long (or whose replies make no progress this long)
is closed. ``--request-timeout``: a request still incomplete this long after its first byte (a
trickler) is closed. What the client is told is the protocol's (``session.error_reply(reason)``:
its own error reply, or a silent close). How an engine notices is its own: the kernel
(``SO_RCVTIMEO``/``SO_SNDTIMEO`` on OS threads: free per request), a sweep over its connections
(event loops, the thread pool), or a watchdog (gevent).
"""
from __future__ import annotations

import socket
import struct

IDLE = "idle timeout"
REQUEST = "request timeout"
_TIMEVAL = "ll"  # struct timeval: seconds, microseconds (Linux, 64-bit longs)


def sweep_period(config) -> float:
    """A quarter of the shortest timeout, at most a second: a timeout fires at most 25% late."""
    return min(1.0, config.idle_timeout / 4, config.request_timeout / 4)


def expired(config, now: float, last_active: float, request_started: float | None) -> str | None:
    """IDLE or REQUEST if a connection is past that deadline at ``now``, else None."""
    if request_started is not None and now >= request_started + config.request_timeout:
        return REQUEST
    if now >= last_active + config.idle_timeout:
        return IDLE
    return None


def timeval(seconds: float) -> bytes:
    seconds = max(seconds, 0.001)  # 0 would mean "no timeout"
    whole = int(seconds)
    return struct.pack(_TIMEVAL, whole, int((seconds - whole) * 1e6))


def set_kernel_timeouts(sock: socket.socket, *, recv: float | None = None, send: float | None = None) -> None:
    """A blocking ``recv``/``send`` that makes no progress this long fails with a timeout."""
    if recv is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(recv))
    if send is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(send))
