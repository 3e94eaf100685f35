"""The table a supervisor and its workers share: one slot per worker, in anonymous shared memory.

A worker writes, the supervisor reads (and resets a slot before lending it to a new worker),
except ``handoff``, which only the supervisor writes:

``beat``
    ``time.monotonic()`` of the worker's last heartbeat. The worker's *event loop* writes it from a
    timer callback, so a loop that is stuck stops beating; a helper thread would keep beating
    for a dead loop. (Linux's CLOCK_MONOTONIC is system-wide, so the supervisor can compare it.)
``ready``
    1 once the worker accepts connections.
``recycle``
    1 when the worker asks to be replaced (``--max-requests`` reached): the supervisor starts its
    successor first, then drains it, so capacity never drops.
``handoff``
    set by the supervisor before it drains a worker while others keep serving (reload, recycle,
    SIGTTOU): a worker on the shared socket then leaves its backlog to them instead of accepting
    it only to close those connections in its own drain.
``open``
    the worker's open connections, so every worker can enforce one global ``--max-conns``.
``handed_off``, ``adopted``, ``closed_on_stop``
    written once, when the worker has drained: connections it handed to other workers, those
    it was handed, and those it closed while stopping (the supervisor logs them at its exit).
``connections``, ``requests``, ``errors``
    the worker's counts (``ServeStats``), published at each beat and at exit; the supervisor adds
    them to its exit summary and logs them per worker (the load distribution).

Plain aligned 8-byte stores and loads: each field has a single writer, so no lock is needed.
"""
from __future__ import annotations

import ctypes
import mmap
import time


class Slot(ctypes.Structure):
    _fields_ = [
        ("beat", ctypes.c_double),
        ("ready", ctypes.c_int64),
        ("recycle", ctypes.c_int64),
        ("handoff", ctypes.c_int64),
        ("open", ctypes.c_int64),
        ("connections", ctypes.c_int64),
        ("requests", ctypes.c_int64),
        ("errors", ctypes.c_int64),
        ("handed_off", ctypes.c_int64),
        ("adopted", ctypes.c_int64),
        ("closed_on_stop", ctypes.c_int64),
    ]

    def reset(self) -> None:
        """Before a new worker uses the slot: its start time counts as its first beat."""
        ctypes.memset(ctypes.addressof(self), 0, ctypes.sizeof(self))
        self.beat = time.monotonic()

    def beat_now(self) -> None:
        self.beat = time.monotonic()

    def publish(self, stats) -> None:
        """Copy a ServeStats' counts (called on the worker's loop thread)."""
        self.connections = stats.connections
        self.requests = stats.requests
        self.errors = stats.errors

    def counts(self) -> tuple[int, int, int]:
        return self.connections, self.requests, self.errors


class SlotTable:
    """``size`` slots in memory that survives ``fork`` shared (MAP_SHARED | MAP_ANONYMOUS).

    Create it before forking; ``take()``/``give_back()`` are the supervisor's (single thread).
    """

    def __init__(self, size: int):
        self._memory = mmap.mmap(-1, ctypes.sizeof(Slot) * size)
        self.slots = (Slot * size).from_buffer(self._memory)
        self._free = list(range(size - 1, -1, -1))

    def take(self) -> int | None:
        """A free slot's index, reset; None when all are lent."""
        if not self._free:
            return None
        index = self._free.pop()
        self.slots[index].reset()
        return index

    def give_back(self, index: int) -> None:
        """The worker is gone: its connections are closed, so they stop counting."""
        self.slots[index].open = 0
        self.slots[index].ready = 0
        self._free.append(index)

    def open_connections(self, skip: int) -> int:
        """Open connections of every worker but slot ``skip`` (free slots hold 0)."""
        slots = self.slots
        return sum(slots[i].open for i in range(len(slots)) if i != skip)

    def least_open(self, skip: int, beat_since: float) -> int | None:
        """Fewest open connections among the other workers that accept, are not draining and
        beat at or after ``beat_since``; None if there is no such worker."""
        counts = [slot.open for i, slot in enumerate(self.slots)
                  if i != skip and slot.ready and not slot.handoff and slot.beat >= beat_since]
        return min(counts) if counts else None
