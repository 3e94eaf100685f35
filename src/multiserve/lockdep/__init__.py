"""lockdep: a lock-order checker for Python threads, after the Linux kernel's lockdep.

It checks two things, on ``threading.Lock`` and ``threading.RLock`` objects it tracks:

* **Potential inversions.** Whenever a thread holding lock H blocks to take lock L, the order
  H -> L is recorded. If L -> ... -> H is already recorded, two threads can deadlock on these
  locks in some run, even if this run's timing was lucky; this is reported once per cycle, with
  the thread and code lines that took each order. (The kernel keys locks by class; this checker
  keys them by instance, so nested per-object locks made on one line are not false alarms.)
* **Actual deadlocks.** A thread that has waited ``poll`` seconds for a lock follows the wait-for
  chain (it waits for L, L's owner waits for M, ...). If the chain comes back to it, the checker
  reports the cycle (each thread, the lock it holds, the lock it waits for, the code lines) and
  raises ``DeadlockError`` in that thread instead of letting it hang, so it unwinds (its ``with``
  blocks release their locks) and the others go on. Reading and changing this bookkeeping happen
  under one internal lock, so a cycle is found from a consistent snapshot and reported by one
  thread only.

A lock is named after the code that made it (``a``, ``self.lock``, ``locks[2]``, else
``lock@file.py:LINE:COL``; :mod:`.naming`), each name its own, so a reported cycle reads
``a -> b -> a``, never ``a -> a -> a``.

Use ``with Checker().installed():`` (locks created meanwhile by code outside the standard library
are tracked; the stdlib's own locks, inside Event, Condition, queue, are not), ``checker.Lock()``
for one lock explicitly, or ``python -m multiserve.lockdep script.py [args]`` for a whole program.
"""
from .checker import Checker
from .report import Deadlock, DeadlockError, Edge, Inversion, Site, WaitLink

__all__ = ["Checker", "Deadlock", "DeadlockError", "Edge", "Inversion", "Site", "WaitLink"]
