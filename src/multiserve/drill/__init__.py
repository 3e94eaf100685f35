"""``multiserve drill``: faults and attackers under live load, counted per event.

A drill starts a server (a multiserve engine, or any command), drives open-loop load at it through
:mod:`multiserve.loadgen` (every reply verified, latency from the intended send time), fires
events at set times (signals, a killed or stopped worker, a killed server) and runs attackers
beside the load (slowloris, idle, never-read, oversize, churn). It reports what a user cares about
per event: requests lost, connections closed, refused, reset, timed out, wrong replies, the latency
peak and the time to recover.

    from multiserve.drill import DrillSpec, parse_attack, parse_events, run_drill
    result = run_drill(DrillSpec(engine="hybrid", serve_args=["--workers", "2"], events=parse_events("ttin@2"), duration=5))
    result.to_dict(), result.exit_code, result.rows, result.total

Modules, one concern each: ``target`` (the server under drill), ``events``, ``attacks``,
``counting`` (per-event windows, totals, the verdict), ``report`` (table, JSON), ``plot``
(matplotlib, imported only there), ``runner`` (the orchestration), ``cli``.
"""
from .attacks import Attack, parse_attack
from .events import Event, parse_events
from .runner import DrillSpec, run_drill

__all__ = ["Attack", "DrillSpec", "Event", "parse_attack", "parse_events", "run_drill"]
