"""The service interface: what a user writes to serve a line protocol under any engine.

A service answers one request line with reply bytes. It never knows which engine runs it: the
engine decides *where* a call runs (inline, on a thread pool, in a process pool), guided by two
class attributes the service declares:

``blocking``
    ``handle`` may block (a database call, ``time.sleep``). Event-loop engines run it on a thread
    pool, never on the loop. Default True: the safe assumption for user code.
``cpu_bound``
    ``handle`` burns CPU in Python. Engines with a process pool (``hybrid``) send the call there,
    so it must not depend on the per-connection object: it is called as ``handle(request, None)``
    in another process, and the service must pickle.

``cpu_bound_for(request) -> bool`` (optional method)
    A per-request split for a mixed load: the lines it names go where CPU-bound calls go, the
    others are answered as ``blocking`` says.

A service may instead (or also) define ``async def handle_async(self, request, conn)``. Event-loop
engines await it; the other engines run it on a per-thread event loop. If only ``handle_async``
exists, every engine still serves the service.

Per-connection life cycle, in the spirit of socketserver's ``setup()/handle()/finish()``:
``setup(conn)`` once when a client connects, ``handle`` per request, ``finish(conn)`` once when it
leaves (also after errors). ``conn`` is a :class:`Connection`: it carries ``peer`` and a free
attribute namespace ``state`` for the service's own per-connection data.

What may be overridden: ``setup``, ``handle``, ``handle_async``, ``finish``, ``cpu_bound_for``, ``open``/``close``
(once per serving process, e.g. to open a database pool after a fork), and the two flags.
"""
from __future__ import annotations

import types


class Connection:
    """One client, as a service sees it. ``state`` is the service's to fill (made on first use,
    so a service that keeps no state costs an idle connection nothing for it)."""

    __slots__ = ("peer", "_state")

    def __init__(self, peer=None):
        self.peer = peer
        self._state = None

    @property
    def state(self) -> types.SimpleNamespace:
        if self._state is None:
            self._state = types.SimpleNamespace()
        return self._state


class Service:
    """Base class of every service. Subclass it and override ``handle`` (or ``handle_async``)."""

    blocking = True
    cpu_bound = False

    def open(self) -> None:
        """Once per serving process, before the first connection (after any fork)."""

    def close(self) -> None:
        """Once per serving process, at exit."""

    def setup(self, conn: Connection) -> None:
        """A client connected."""

    def handle(self, request: bytes, conn: Connection | None) -> bytes:
        """Return the reply to one request line (which ends in ``\\n``, except a final one).
        May block unless ``blocking = False``. Override this, ``handle_async``, or both."""
        raise NotImplementedError

    async def handle_async(self, request: bytes, conn: Connection | None) -> bytes:
        """The same as a coroutine: event-loop engines await it, the others run it on an event
        loop of their own (one per thread). Override this, ``handle``, or both."""
        raise NotImplementedError

    def cpu_bound_for(self, request: bytes) -> bool:
        """Optional per-request split for a mixed load: True sends this request where CPU-bound
        calls go (the ``hybrid`` engine's process pool). Only consulted when overridden."""
        return self.cpu_bound

    def finish(self, conn: Connection) -> None:
        """The client left (or was closed); called exactly once per ``setup``."""


def overrides(service, name: str) -> bool:
    """True if ``service`` offers its own ``name`` (for a Service subclass: overrides the base's;
    for any other object: has it)."""
    if isinstance(service, Service):
        return getattr(type(service), name, None) is not getattr(Service, name)
    return callable(getattr(service, name, None))


def has_sync_handle(service) -> bool:
    return overrides(service, "handle")


def has_async_handle(service) -> bool:
    return overrides(service, "handle_async")
