"""Supervision of pre-forked workers: the arbiter (spawn, reap, restart, drain, reload) and the
shared heartbeat table. Used by the ``hybrid`` engine; knows nothing about sockets or services."""
from __future__ import annotations

from .arbiter import BOOT_ERROR, Arbiter, WorkerContext
from .slots import Slot, SlotTable

__all__ = ["Arbiter", "BOOT_ERROR", "Slot", "SlotTable", "WorkerContext"]
