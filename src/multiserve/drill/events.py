"""Events: what happens to the server at set times of the drill (``NAME@SECONDS``, comma-separated).

Each event is one row of :data:`EVENTS` (its name, what it does, which servers it needs), so a
new event is a function and a line. Times count from the start of the load (the loadgen's ``t0``).

=================  ==========================================================================
``hup``            SIGHUP to the main process (hybrid, gunicorn: graceful reload)
``ttin``/``ttou``  SIGTTIN / SIGTTOU (hybrid, gunicorn: one worker more / fewer)
``term``           SIGTERM (graceful stop: in-flight requests must be answered; connection
                   attempts after it are expected to fail and are counted apart)
``kill-worker``    SIGKILL to the oldest worker (a child of the main process)
``stop-worker:S``  SIGSTOP to the oldest worker, SIGCONT S seconds later (a stuck loop the
                   supervisor must notice: ``--worker-timeout``)
``kill-server``    SIGKILL to the whole process group (a single-process server cannot survive it)
=================  ==========================================================================
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Event:
    """One event to fire: ``name`` (a key of EVENTS), ``at_s`` after the load starts, ``arg``
    (stop-worker's seconds). Filled in when fired: ``fired_s`` and ``detail`` (what was done:
    the pid signalled, the worker's connections), or ``failed`` (why nothing was done)."""

    name: str
    at_s: float
    arg: float | None = None
    fired_s: float | None = None
    detail: dict = dataclasses.field(default_factory=dict)
    failed: str | None = None

    @property
    def label(self) -> str:
        arg = "" if self.arg is None else f":{self.arg:g}"
        return f"{self.name}{arg}@{self.at_s:g}"


@dataclasses.dataclass(frozen=True)
class EventKind:
    fire: object  # fire(target, event, later) -> detail dict; raises LookupError when it cannot
    needs: str  # "signals": the server handles HUP/TTIN/TTOU; "workers": it has worker processes; "": any
    takes_arg: bool = False


def _send(sig):
    def fire(target, event, later):
        target.signal(sig)
        return {"pid": target.pid, "signal": signal.Signals(sig).name}
    return fire


def _oldest_worker(target) -> int:
    workers = target.workers()
    if not workers:
        raise LookupError("no worker process to act on")
    return workers[0]


def _kill_worker(target, event, later):
    pid = _oldest_worker(target)
    connections = target.connections_of(pid)
    target.signal(signal.SIGKILL, pid)
    return {"pid": pid, "signal": "SIGKILL", "worker_connections": connections}


def _stop_worker(target, event, later):
    pid = _oldest_worker(target)
    connections = target.connections_of(pid)
    target.signal(signal.SIGSTOP, pid)
    later(event.arg, lambda: _resume(target, pid))
    return {"pid": pid, "signal": "SIGSTOP", "stopped_s": event.arg, "worker_connections": connections}


def _resume(target, pid: int) -> None:
    try:
        target.signal(signal.SIGCONT, pid)
    except ProcessLookupError:
        pass  # the supervisor killed it for being stuck: what it should do


def _kill_server(target, event, later):
    target.kill_all()
    return {"pid": target.pid, "signal": "SIGKILL", "group": True}


EVENTS: dict[str, EventKind] = {
    "hup": EventKind(_send(signal.SIGHUP), "signals"),
    "ttin": EventKind(_send(signal.SIGTTIN), "signals"),
    "ttou": EventKind(_send(signal.SIGTTOU), "signals"),
    "term": EventKind(_send(signal.SIGTERM), ""),
    "kill-worker": EventKind(_kill_worker, "workers"),
    "stop-worker": EventKind(_stop_worker, "workers", takes_arg=True),
    "kill-server": EventKind(_kill_server, ""),
}

# Which multiserve engines have what an event needs: only hybrid's supervisor handles
# HUP/TTIN/TTOU (to any other engine SIGHUP's default action is death and SIGTTIN's a stop);
# hybrid's workers and the process engine's per-connection children are worker processes.
ENGINE_HAS = {"signals": {"hybrid"}, "workers": {"hybrid", "process"}, "": None}


def parse_events(text: str, duration: float | None = None) -> list[Event]:
    """``"hup@3,stop-worker:2@5"`` -> events sorted by time. ValueError (one line) for a bad one;
    with ``duration``, each time must fall inside the load."""
    events = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        spec, sep, at = item.rpartition("@")
        if not sep:
            raise ValueError(f"event {item!r}: expected NAME@SECONDS (e.g. hup@3)")
        name, _, arg_text = spec.partition(":")
        kind = EVENTS.get(name)
        if kind is None:
            raise ValueError(f"unknown event {name!r}: use one of {', '.join(EVENTS)}")
        try:
            at_s = float(at)
        except ValueError:
            raise ValueError(f"event {item!r}: {at!r} is not a number of seconds") from None
        if not at_s > 0:
            raise ValueError(f"event {item!r}: the time must be > 0 seconds")
        if duration is not None and at_s >= duration:
            raise ValueError(f"event {item!r}: at {at_s:g} s, not inside the {duration:g} s load")
        arg = None
        if kind.takes_arg:
            try:
                arg = float(arg_text)
            except ValueError:
                raise ValueError(f"event {item!r}: expected {name}:SECONDS@SECONDS (e.g. {name}:2@3)") from None
            if not arg > 0:
                raise ValueError(f"event {item!r}: the stop must last > 0 seconds")
        elif arg_text:
            raise ValueError(f"event {item!r}: {name} takes no argument")
        events.append(Event(name, at_s, arg))
    return sorted(events, key=lambda e: e.at_s)


def check_engine(events: list[Event], engine: str) -> None:
    """ValueError if a multiserve ``engine`` lacks what an event needs (checked before starting)."""
    for event in events:
        needs = EVENTS[event.name].needs
        engines = ENGINE_HAS[needs]
        if engines is not None and engine not in engines:
            what = "handles no SIGHUP/SIGTTIN/SIGTTOU" if needs == "signals" else "has no worker processes"
            raise ValueError(f"event {event.name}: engine {engine} {what} (use {' or '.join(sorted(engines))}, or --server)")


class EventFirer:
    """Fires ``events`` from a thread at ``t0 + at_s`` (``start(t0)``, called by the loadgen's
    ``on_start``). ``on_fire(event)`` is called after each. ``close()`` stops it and performs
    what is still pending (a stopped worker is always continued), so no process stays stopped."""

    def __init__(self, target, events: list[Event], on_fire=None):
        self.target = target
        self.events = events
        self.on_fire = on_fire or (lambda event: None)
        self._t0 = None
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._pending: list[tuple[float, object]] = []  # (monotonic time, action): SIGCONTs
        self._thread = threading.Thread(target=self._run, name="multiserve-drill-events", daemon=True)

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread.start()

    def _later(self, delay: float, action) -> None:
        with self._lock:
            self._pending.append((time.monotonic() + delay, action))

    def _run(self) -> None:
        queue = list(self.events)
        while not self._closing.is_set():
            now = time.monotonic()
            self._run_pending(now)
            if queue and now >= self._t0 + queue[0].at_s:
                self._fire(queue.pop(0), now)
                continue
            wake = [when for when, _ in self._pending]
            if queue:
                wake.append(self._t0 + queue[0].at_s)
            if not wake and not queue:
                return
            self._closing.wait(max(0.0, min(wake) - now))

    def _run_pending(self, now: float, everything: bool = False) -> None:
        with self._lock:
            due = [item for item in self._pending if everything or item[0] <= now]
            self._pending = [item for item in self._pending if item not in due]
        for _, action in due:
            action()

    def _fire(self, event: Event, now: float) -> None:
        event.fired_s = now - self._t0
        try:
            event.detail = EVENTS[event.name].fire(self.target, event, self._later)
        except (LookupError, ProcessLookupError, PermissionError) as exc:
            event.failed = str(exc) if isinstance(exc, LookupError) else f"{type(exc).__name__}: the server is gone"
            log.warning("drill: event %s not fired: %s", event.label, event.failed)
        self.on_fire(event)

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._run_pending(time.monotonic(), everything=True)
