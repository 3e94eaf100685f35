"""The checker: tracked locks, the lock-order graph and the wait-for chain (see the package doc)."""
from __future__ import annotations

import _thread
import contextlib
import sys
import sysconfig
import threading
import time

from .naming import Namer
from .report import Deadlock, DeadlockError, Edge, Inversion, Site, WaitLink

# How long a blocked thread waits before it looks for a deadlock cycle: a deadlock is reported
# within this much of the second thread blocking, and a thread merely waiting long for a lock
# wakes this often to look (a few dictionary reads under the GIL, a few microseconds).
POLL_SECONDS = 0.1
STDLIB = sysconfig.get_paths()["stdlib"]


def _in_stdlib(path: str) -> bool:
    """The standard library's own files (not a site-packages that may live under the same root)."""
    return path.startswith(STDLIB) and "-packages" not in path


class TrackedLock:
    """A ``threading.Lock`` whose acquisitions the checker sees. Same methods, same meaning."""

    reentrant = False

    def __init__(self, checker: "Checker", name: str, created: Site):
        self._inner = _thread.RLock() if self.reentrant else _thread.allocate_lock()
        self._checker = checker
        self.name = name
        self.created = created

    def acquire(self, blocking=True, timeout=-1):
        return self._checker._acquire(self, blocking, timeout, Site.of(sys._getframe(1)))

    def __enter__(self):
        return self._checker._acquire(self, True, -1, Site.of(sys._getframe(1)))

    def release(self):
        self._checker._release(self)

    def __exit__(self, *exc):
        self._checker._release(self)

    def locked(self) -> bool:
        return self._checker._owner_of(self) is not None

    def _is_owned(self) -> bool:  # threading.Condition asks its lock this
        return self._checker._owner_of(self) == _thread.get_ident()

    def __repr__(self):
        return f"<lockdep {type(self).__name__} {self.name} created at {self.created}>"


class TrackedRLock(TrackedLock):
    """A ``threading.RLock``: its owner may take it again; only the first take is an ordering."""

    reentrant = True


class Checker:
    """Tracks locks and reports inversions and deadlocks (see the package doc).

    ``on_report(report)`` is called (outside the checker's lock) with each ``Inversion`` and
    ``Deadlock`` as it is found; they also accumulate in ``inversions`` and ``deadlocks``.
    """

    def __init__(self, *, poll: float = POLL_SECONDS, on_report=None):
        self.poll = poll
        self.on_report = on_report or (lambda report: None)
        self.inversions: list[Inversion] = []
        self.deadlocks: list[Deadlock] = []
        self._state = _thread.allocate_lock()  # a raw lock: the checker never checks itself
        self._owner: dict[TrackedLock, int] = {}
        self._depth: dict[TrackedLock, int] = {}  # RLock recursion
        self._held: dict[int, list[tuple[TrackedLock, Site]]] = {}
        self._waiting: dict[int, tuple[TrackedLock, Site]] = {}
        self._names: dict[int, str] = {}
        self._after: dict[TrackedLock, dict[TrackedLock, Edge]] = {}
        self._reported: set[frozenset] = set()
        self._namer = Namer()  # a lock without an explicit name is named after the code that made it

    # -- making locks ---------------------------------------------------------------------------

    def Lock(self, name: str | None = None, *, _depth: int = 1) -> TrackedLock:
        return self._make(TrackedLock, name, sys._getframe(_depth))

    def RLock(self, name: str | None = None, *, _depth: int = 1) -> TrackedRLock:
        return self._make(TrackedRLock, name, sys._getframe(_depth))

    def _make(self, cls, name, frame):
        created = Site.of(frame)
        return cls(self, self._namer.name(frame) if name is None else name, created)

    @contextlib.contextmanager
    def installed(self):
        """Within, ``threading.Lock()``/``RLock()`` called from outside the stdlib make tracked locks."""
        original = threading.Lock, threading.RLock

        def factory(tracked, plain):
            def make(*args, **kwargs):
                frame = sys._getframe(1)
                if _in_stdlib(frame.f_code.co_filename):
                    return plain(*args, **kwargs)
                return self._make(tracked, None, frame)

            return make

        threading.Lock, threading.RLock = factory(TrackedLock, original[0]), factory(TrackedRLock, original[1])
        try:
            yield self
        finally:
            threading.Lock, threading.RLock = original

    # -- acquiring and releasing ---------------------------------------------------------------

    def _owner_of(self, lock):
        return self._owner.get(lock)

    def _acquire(self, lock, blocking, timeout, site) -> bool:
        me = _thread.get_ident()
        name = threading.current_thread().name
        found = None
        with self._state:
            self._names[me] = name
            mine = self._owner.get(lock) == me
            if mine and not lock.reentrant and blocking and timeout < 0:
                found = self._self_deadlock(me, lock, site)
            elif blocking and not mine:
                found = self._record_order(me, lock, site)
        if isinstance(found, Deadlock):
            self._found(found)
            raise DeadlockError(found)
        if found is not None:
            self._found(found)
        if lock._inner.acquire(False):
            self._took(me, lock, site)
            return True
        if not blocking:
            return False
        return self._wait(me, lock, site, timeout)

    def _wait(self, me, lock, site, timeout) -> bool:
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with self._state:
            self._waiting[me] = (lock, site)
        try:
            while True:
                wait = self.poll if deadline is None else max(0.0, min(self.poll, deadline - time.monotonic()))
                if lock._inner.acquire(True, wait):
                    self._took(me, lock, site)
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                with self._state:
                    deadlock = self._cycle_from(me)
                    if deadlock is not None:
                        del self._waiting[me]  # so no other thread reports the same cycle
                if deadlock is not None:
                    self._found(deadlock)
                    raise DeadlockError(deadlock)
        finally:
            with self._state:
                self._waiting.pop(me, None)

    def _took(self, me, lock, site):
        with self._state:
            self._waiting.pop(me, None)
            if self._owner.get(lock) == me:
                self._depth[lock] += 1
                return
            self._owner[lock] = me
            self._depth[lock] = 1
            self._held.setdefault(me, []).append((lock, site))

    def _release(self, lock):
        with self._state:
            owner = self._owner.get(lock)
            if owner is None:
                raise RuntimeError(f"release unlocked lock {lock.name}")
            if lock.reentrant and owner != _thread.get_ident():
                raise RuntimeError(f"cannot release un-acquired lock {lock.name}")
            self._depth[lock] -= 1
            if self._depth[lock] == 0:
                del self._owner[lock], self._depth[lock]
                held = self._held[owner]  # a plain Lock may be released by another thread
                held.pop(next(k for k, (h, _) in enumerate(held) if h is lock))
            lock._inner.release()

    def _found(self, report):
        (self.deadlocks if isinstance(report, Deadlock) else self.inversions).append(report)
        self.on_report(report)

    # -- the two graphs (called with self._state held) -----------------------------------------

    def _record_order(self, me, lock, site):
        """Record held -> lock for each held lock; return an Inversion if one closes a cycle."""
        found = None
        for held, held_at in self._held.get(me, ()):
            after = self._after.setdefault(held, {})
            if lock in after or held is lock:
                continue
            edge = after[lock] = Edge(held.name, lock.name, self._names[me], held_at, site)
            path = self._path(lock, held)
            if path is not None and found is None:
                key = frozenset(path) | {held}
                if key not in self._reported:
                    self._reported.add(key)
                    found = Inversion((edge, *self._edges_along([lock, *path])))
        return found

    def _path(self, start, goal):
        """Locks after ``start`` leading to ``goal`` (ending with it), or None: depth-first."""
        stack, seen = [(start, [])], {start}
        while stack:
            node, trail = stack.pop()
            for nxt in self._after.get(node, {}):
                if nxt is goal:
                    return [*trail, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    def _edges_along(self, locks):
        return [self._after[a][b] for a, b in zip(locks, locks[1:])]

    def _self_deadlock(self, me, lock, site) -> Deadlock:
        held_at = next(s for h, s in self._held[me] if h is lock)
        return Deadlock((WaitLink(self._names[me], lock.name, held_at, lock.name, site),))

    def _cycle_from(self, me):
        """Follow waits-for -> owned-by from ``me``; a Deadlock if it comes back to ``me``."""
        chain, thread, seen = [], me, set()
        while thread in self._waiting and thread not in seen:
            seen.add(thread)
            lock, wait_at = self._waiting[thread]
            owner = self._owner.get(lock)
            if owner is None:
                return None
            chain.append((thread, lock, wait_at, owner))
            if owner == me:
                return Deadlock(tuple(self._links(chain)))
            thread = owner
        return None

    def _links(self, chain):
        # Each thread holds the lock that the one before it in the chain waits for.
        for k, (thread, waits_for, wait_at, _) in enumerate(chain):
            holds = chain[k - 1][1]
            held_at = next(s for h, s in self._held[thread] if h is holds)
            yield WaitLink(self._names[thread], holds.name, held_at, waits_for.name, wait_at)
