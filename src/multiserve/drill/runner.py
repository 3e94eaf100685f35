"""``run_drill(spec)``: start the server, the attackers and the load, fire the events, collect.

Order: the server is ready; the attackers make their first connects; the load's workers connect
and, at the load's ``t0``, the event thread starts counting; when the load ends, pending actions
run (a stopped worker is continued), the attackers stop, and the server gets SIGTERM (if still
up) and its exit status is kept. Whatever happens, no process of the server's group is left.
"""
from __future__ import annotations

import dataclasses
import logging

from ..config import SETTINGS_BY_NAME
from ..loadgen import LoadSpec, run_load
from . import counting
from .attacks import Attack, AttackRunner
from .events import Event, EventFirer, check_engine
from .target import start_command, start_engine

log = logging.getLogger(__name__)

# The timeline's resolution: fine enough to see a reload (hundreds of ms), coarse enough that a
# bucket holds enough replies for a p99 at a few hundred req/s.
TIMELINE_INTERVAL = 0.1
# Bucket ends fall at 0.05, 0.15, ... s: half a bucket away from event times given in tenths, so
# an event's first effects land in its own bucket even when a worker's bucket timer runs late.
TIMELINE_PHASE = TIMELINE_INTERVAL / 2
# Attackers stop by themselves this long after the load's planned end, if nobody stopped them.
ATTACK_SLACK = 60.0
# serve's defaults (config.py): the engine, and the line limit oversize attackers exceed.
DEFAULT_ENGINE = SETTINGS_BY_NAME["engine"].default
DEFAULT_MAX_LINE = SETTINGS_BY_NAME["max_line"].default


@dataclasses.dataclass
class DrillSpec:
    """One drill. ``engine`` (a multiserve engine, started with ``serve_args``) or ``command``
    (``--server``: any server, ``{port}`` replaced by a free port)."""

    engine: str | None = None  # None: serve_args's --engine, else serve's default
    command: str | None = None
    serve_args: list[str] = dataclasses.field(default_factory=list)
    rate: float = 1000.0
    connections: int = 32
    duration: float = 8.0
    events: list[Event] = dataclasses.field(default_factory=list)
    attacks: list[Attack] = dataclasses.field(default_factory=list)
    processes: int = 1
    expect: str = "upper"
    reply_timeout: float = 5.0
    ready_timeout: float = 30.0
    stop_timeout: float = 30.0
    max_line: int = DEFAULT_MAX_LINE


@dataclasses.dataclass
class DrillResult:
    spec: DrillSpec
    target: str
    pid: int
    port: int
    load: object  # the loadgen's LoadResult
    rows: list
    total: dict
    exit_code: int
    reasons: list[str]
    server_exit: int | None
    server_output: list[str]
    handoffs: dict | None = None  # a hybrid server's own count of the connections its retiring workers moved

    def to_dict(self) -> dict:
        """The JSON of ``multiserve drill --json``."""
        spec = self.spec
        events = [r for r in self.rows if r.at_s is not None]
        by_label = {e.label: e for e in spec.events}

        def row(r):
            out = {"event": r.label, "at_s": r.at_s, "requests": r.requests, "errors": dict(r.errors),
                   "mismatches": r.mismatches, "p99_us": r.p99_us, "max_us": r.max_us,
                   "recovery_s": r.recovery_s, "baseline_p99_us": r.baseline_p99_us}
            event = by_label.get(r.label)
            if event is not None:
                out["planned_s"] = event.at_s
                out["detail"] = dict(event.detail)
            return out

        return {
            "target": self.target, "pid": self.pid, "port": self.port,
            "settings": {"rate": spec.rate, "connections": spec.connections, "duration_s": spec.duration,
                         "processes": spec.processes, "reply_timeout_s": spec.reply_timeout,
                         "serve_args": list(spec.serve_args), "events": [e.label for e in spec.events],
                         "attacks": [f"{a.kind}:{a.n}" for a in spec.attacks]},
            "events": [row(r) for r in events],
            "before_events": row(self.rows[0]) if self.rows and self.rows[0].at_s is None else None,
            "unfired": [{"event": e.label, "failed": e.failed} for e in spec.events if e.fired_s is None or e.failed],
            "total": self.total,
            "attacks": [a.to_dict() for a in spec.attacks],
            "timeline_interval_s": TIMELINE_INTERVAL,
            "timeline": [{"t_s": b["second"], **{k: v for k, v in b.items() if k != "second"}} for b in self.load.timeline],
            "server_exit": self.server_exit,
            "server_handoffs": self.handoffs,
            "exit": self.exit_code,
            "reasons": list(self.reasons),
        }


def run_drill(spec: DrillSpec, *, progress=False, on_fire=None) -> DrillResult:
    """Runs the drill to the end (blocking). Raises ValueError for a bad server command or an
    event the engine cannot take (before starting anything), ``target.TargetError`` if the
    server never became ready; everything started is ended before it returns or raises."""
    if spec.command is not None:
        target = start_command(spec.command, spec.ready_timeout)
    else:
        serve_args = list(spec.serve_args)
        if spec.engine is not None and "--engine" not in serve_args:
            serve_args = ["--engine", spec.engine, *serve_args]
        engine = serve_args[serve_args.index("--engine") + 1] if "--engine" in serve_args else DEFAULT_ENGINE
        check_engine(spec.events, engine)  # before anything starts: SIGHUP would kill a thread engine
        target = start_engine(serve_args, spec.ready_timeout)
    attackers = AttackRunner(spec.attacks, target.host, target.port, max_line=spec.max_line,
                             deadline=spec.duration + ATTACK_SLACK)
    firer = EventFirer(target, spec.events, on_fire=on_fire)
    server_exit = None
    try:
        attackers.start()
        load = run_load(
            LoadSpec(host=target.host, port=target.port, connections=spec.connections, duration=spec.duration,
                     rate=spec.rate, processes=spec.processes, expect=spec.expect,
                     reply_timeout=spec.reply_timeout, timeline_interval=TIMELINE_INTERVAL,
                     timeline_phase=TIMELINE_PHASE),
            progress=progress, on_start=firer.start,
        )
    finally:
        firer.close()
        attackers.stop()
        server_exit = target.stop(spec.stop_timeout)
    rows = counting.build_rows(load, spec.events, TIMELINE_INTERVAL)
    total = counting.totals(load, counting.split_at_term(load, spec.events, TIMELINE_INTERVAL))
    code, reasons = counting.verdict(total, spec.events, load.worker_failures, spec.connections)
    return DrillResult(spec, target.label, target.pid, target.port, load, rows, total, code, reasons,
                       server_exit, list(target.output), target.handoffs)
