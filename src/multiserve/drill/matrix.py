"""The reliability matrix of docs/reliability.md, one drill per cell, in one run:

* every engine x every attack (and the stdlib/gevent baselines x every attack, through
  ``--server``), beside a probe load: the probe's p99 and errors, and what the attackers saw;
* hybrid x every event, under the issue's load (64 connections, 2,000 req/s, the event at 3 s).

    python -m multiserve.drill.matrix [--duration 8] [--json FILE] > tables.md

Prints the markdown tables; ``--json`` keeps every drill's summary. Heavy (about 60 drills of
``--duration`` seconds each): run it alone (``flock /tmp/multiserve-bench.lock ...``).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from ..engines import ENGINES
from .attacks import parse_attack
from .events import parse_events
from .runner import DrillSpec, run_drill

# The attack figures: 300 slowloris beside a 300 req/s probe, --request-timeout 2; the
# other attacks at counts that stay bounded on 2 cores (a never-read attacker pipelines megabytes).
ATTACKS = ("slowloris:300", "idle:300", "never-read:10", "oversize:20", "churn:10")
SERVE_LIMITS = ["--request-timeout", "2", "--idle-timeout", "2"]
PROBE = dict(rate=300.0, connections=16)
BASELINES = ("threadingtcp", "forkingtcp", "gevent-streamserver", "asyncio-streams")
# The hand measurement: hybrid, 2 workers, 64 connections, 2,000 req/s, one event at 3 s.
EVENTS = ("hup@3", "ttin@3", "ttou@3", "kill-worker@3", "stop-worker:3@3", "term@3", "kill-server@3")
EVENT_LOAD = dict(rate=2000.0, connections=64)
HYBRID = ["--engine", "hybrid", "--workers", "2", "--worker-timeout", "2"]
KINDS = ("lost", "closed", "refused", "reset", "timeout", "unsent")


def _ms(us) -> str:
    return "-" if us is None else f"{us / 1000:,.1f}"


def _cell(make, *args) -> dict:
    """One drill; a server that never became ready is a row with its reason, not a crash."""
    from .target import TargetError

    try:
        return make(*args)
    except (TargetError, ValueError) as exc:
        return {"failed": str(exc)}


def attack_cell(server: str, attack: str, duration: float) -> dict:
    if server in ENGINES:
        spec = DrillSpec(serve_args=["--engine", server, *SERVE_LIMITS], duration=duration, attacks=[parse_attack(attack)], **PROBE)
    else:
        spec = DrillSpec(engine=None, command=f"{sys.executable} -m multiserve.compare.baselines {server} --port 0",
                         duration=duration, attacks=[parse_attack(attack)], **PROBE)
    result = run_drill(spec)
    a = spec.attacks[0]
    t = result.total
    return {"server": server, "attack": attack, "requests": t["requests"], "p99_us": t["latency_us"]["p99"],
            "max_us": t["latency_us"]["max"], "errors": t["errors"], "mismatches": t["mismatches"],
            "unanswered_at_end": t["unanswered_at_end"],
            "opened": a.opened, "closed_by_server": a.closed_by_server, "exit": result.exit_code,
            "reasons": result.reasons, "server_exit": result.server_exit}


def event_cell(event: str, duration: float) -> dict:
    spec = DrillSpec(serve_args=list(HYBRID), duration=duration, events=parse_events(event, duration), **EVENT_LOAD)
    result = run_drill(spec)
    row = next(r for r in result.rows if r.at_s is not None) if spec.events[0].fired_s is not None else None
    ev = spec.events[0]
    return {"event": event, "requests": row.requests if row else 0, "errors": row.errors if row else {},
            "mismatches": row.mismatches if row else 0, "p99_us": row.p99_us if row else None,
            "max_us": row.max_us if row else None, "recovery_s": row.recovery_s if row else None,
            "baseline_p99_us": row.baseline_p99_us if row else None, "detail": ev.detail, "event_failed": ev.failed,
            "total_requests": result.total["requests"], "after_term": result.total["after_term"],
            "exit": result.exit_code, "reasons": result.reasons, "server_exit": result.server_exit}


def _header(names) -> list[str]:
    return ["| " + " | ".join(names) + " |", "|---" * len(names) + "|"]


def attack_table(cells) -> str:
    lines = _header(["server", "attack", "probe replies", "unanswered at end", "probe p99 ms", "max ms", *KINDS, "wrong",
                     "attackers opened", "closed by server", "exit"])
    for c in cells:
        if c.get("failed"):
            lines.append(f"| {c['server']} | {c['attack']} | not run: {c['failed']} |")
            continue
        e = c["errors"]
        lines.append(f"| {c['server']} | {c['attack']} | {c['requests']:,} | {c.get('unanswered_at_end', '?')} | {_ms(c['p99_us'])} | {_ms(c['max_us'])} | "
                     + " | ".join(str(e.get(k, 0)) for k in KINDS)
                     + f" | {c['mismatches']} | {c['opened']:,} | {c['closed_by_server']:,} | {c['exit']} |")
    return "\n".join(lines)


def event_table(cells) -> str:
    lines = _header(["event", "replies (event to end)", *KINDS, "wrong", "p99 ms (second before)", "max ms", "recovery s",
                     "worker conns", "exit"])
    for c in cells:
        if c.get("failed"):
            lines.append(f"| {c['event']} | not run: {c['failed']} |")
            continue
        e = c["errors"]
        recovery = "not recovered" if c["recovery_s"] is None else f"{c['recovery_s']:.1f}"
        conns = c["detail"].get("worker_connections", "")
        lines.append(f"| {c['event']} | {c['requests']:,} | " + " | ".join(str(e.get(k, 0)) for k in KINDS)
                     + f" | {c['mismatches']} | {_ms(c['p99_us'])} ({_ms(c['baseline_p99_us'])}) | {_ms(c['max_us'])} | {recovery} | {conns} | {c['exit']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m multiserve.drill.matrix", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--only", choices=("attacks", "events"))
    p.add_argument("--from-json", metavar="FILE", help="print the tables of an earlier run's --json, run nothing")
    args = p.parse_args(argv)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            data = json.load(f)
        print(f"run {data['date']}\n")
        for cells, table in ((data["attacks"], attack_table), (data["events"], event_table)):
            if cells:
                print(table(cells) + "\n")
        return 0
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    servers = [*ENGINES, *(() if args.no_baselines else BASELINES)]
    attacks, events = [], []
    if args.only != "events":
        for server in servers:
            for attack in ATTACKS:
                attacks.append({"server": server, "attack": attack, **_cell(attack_cell, server, attack, args.duration)})
                print(f"# {server} {attack}: exit {attacks[-1].get('exit', 'not run')}", file=sys.stderr, flush=True)
    if args.only != "attacks":
        for event in EVENTS:
            events.append({"event": event, **_cell(event_cell, event, args.duration)})
            print(f"# hybrid {event}: exit {events[-1].get('exit', 'not run')}", file=sys.stderr, flush=True)
    print(f"run {started}, {platform.node()}, Python {platform.python_version()}\n")
    if attacks:
        print(attack_table(attacks) + "\n")
    if events:
        print(event_table(events) + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"date": started, "duration_s": args.duration, "attacks": attacks, "events": events}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
