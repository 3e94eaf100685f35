"""From the load's 100 ms timeline and the fired events to what the drill reports: one row per
event, the total, and the verdict (the exit status).

An event's row covers the buckets from the one it fired in up to the next event's (or the end),
so every loss after an event is charged to it and the rows add up to the total (the requests
before the first event have a row of their own). The issue proposed ending the row when p99 is
back under twice its pre-event value; measured, a reload's losses come when the old workers are
drained, often after p99 has settled, so that window would miss them: the row runs to the next
event instead, and ``recovery_s`` says when things were back to normal: the end of the last
*disturbed* bucket of the row (an error but a graceful close, no reply at all, or p99 above
the threshold), counted from the event; ``None`` when the row ends disturbed (not recovered).
"""
from __future__ import annotations

import bisect
import dataclasses

from ..loadgen import stats
from ..loadgen.errors import OUTCOMES

# The kinds of a row's ``errors``: the loadgen's outcomes, and open loop's unsent requests.
KINDS = (*OUTCOMES, "unsent")
# Errors that disturb (a graceful close is not one: it lost nothing).
DISTURBING = ("lost", "refused", "reset", "timeout", "unsent")
# Before an event, its baseline p99 is taken over this many seconds (or since the previous event).
BASELINE_S = 1.0
# A bucket is disturbed when its p99 exceeds max(2 x baseline, baseline + this): the open-loop
# scheduler's resolution is the event loop's timer (~1 ms, loadgen README), so differences
# below it are the scheduler's, not the server's.
RESOLUTION_US = 1000


@dataclasses.dataclass
class Row:
    label: str
    at_s: float | None
    first: int  # bucket index range [first, end)
    end: int
    requests: int = 0
    errors: dict = dataclasses.field(default_factory=dict)
    mismatches: int = 0
    p99_us: int = 0
    max_us: int = 0
    recovery_s: float | None = 0.0
    baseline_p99_us: int | None = None


def _errors(buckets) -> dict:
    out = {kind: 0 for kind in KINDS}
    for bucket in buckets:
        for kind, n in bucket["errors"].items():
            out[kind] = out.get(kind, 0) + n
    return out


def bucket_of(t_s: float, timeline) -> int:
    """The index of the bucket holding time ``t_s`` (the first whose end is past it)."""
    return bisect.bisect_right([b["second"] for b in timeline], t_s)


def build_rows(result, events, interval: float) -> list[Row]:
    """The rows: ``before events`` (if the first event is not at 0), then each fired event.
    ``result`` is the loadgen's LoadResult (``timeline`` and ``timeline_histograms``)."""
    timeline, hists = result.timeline, result.timeline_histograms
    count = len(timeline)
    fired = [e for e in events if e.fired_s is not None]
    starts = [bucket_of(e.fired_s, timeline) for e in fired]
    rows = [Row("before events", None, 0, starts[0] if starts else count)]
    for i, event in enumerate(fired):
        end = starts[i + 1] if i + 1 < len(starts) else count
        rows.append(Row(event.label, round(event.fired_s, 3), starts[i], end))
    for index, row in enumerate(rows):
        buckets = timeline[row.first:row.end]
        row.requests = sum(b["requests"] for b in buckets)
        row.errors = _errors(buckets)
        row.mismatches = sum(b["mismatches"] for b in buckets)
        summary = stats.summary(stats.merge(h.encode() for h in hists[row.first:row.end]))
        row.p99_us, row.max_us = (summary["p99"], summary["max"]) if row.requests else (None, None)
        if row.at_s is not None:
            floor = max(rows[index - 1].first, row.first - round(BASELINE_S / interval))
            row.baseline_p99_us = _p99(hists[floor:row.first])
            row.recovery_s = _recovery(row, timeline, interval)
    return rows


def _p99(hists) -> int | None:
    merged = stats.merge(h.encode() for h in hists)
    return stats.summary(merged)["p99"] if merged.get_total_count() else None


def _recovery(row: Row, timeline, interval: float) -> float | None:
    base = row.baseline_p99_us
    threshold = None if base is None else max(2 * base, base + RESOLUTION_US)
    last = None
    for i in range(row.first, row.end):
        b = timeline[i]
        silent = not b["requests"] and i < len(timeline) - 1  # the last bucket may be a sliver
        disturbed = (
            any(b["errors"].get(kind, 0) for kind in DISTURBING) or b["mismatches"] or silent
            or (threshold is not None and b["p99_us"] > threshold)
        )
        if disturbed:
            last = i
    if last is None:
        return 0.0
    end = row.end
    if end == len(timeline) and end - 1 > row.first and not timeline[end - 1]["requests"]:
        end -= 1  # the run's final sliver of a bucket says nothing either way
    if last >= end - 1:
        return None  # still disturbed when the row ends
    return round(max(0.0, timeline[last]["second"] - row.at_s), 3)


def split_at_term(result, events, interval: float) -> dict:
    """Refused and unsent from the bucket a ``term`` fired in onwards: expected after a
    graceful stop, so counted apart (``after_term``) and not against the verdict."""
    term = next((e for e in events if e.name == "term" and e.fired_s is not None), None)
    if term is None:
        return {"refused": 0, "unsent": 0}
    start = bucket_of(term.fired_s, result.timeline)
    errors = _errors(result.timeline[start:])
    return {"refused": errors["refused"], "unsent": errors["unsent"]}


def totals(result, after_term: dict) -> dict:
    errors = {kind: result.errors.get(kind, 0) for kind in KINDS}
    lat = result.latency_us
    return {
        "requests": result.requests,
        "errors": errors,
        "mismatches": result.mismatches,
        "latency_us": {key: lat.get(key, 0) for key in ("p50", "p99", "p999", "max")},
        "after_term": dict(after_term),
        "unanswered_at_end": result.unanswered,
        "other_errors": {k: n for k, n in result.errors.items() if k not in KINDS},
    }


def verdict(total: dict, events, worker_failures, connections: int | None = None) -> tuple[int, list[str]]:
    """``(exit status, reasons)``: 0 when no request was lost, timed out or mismatched, no
    connection refused (nor request left unsent) before a ``term``, every event fired, some
    request was answered, and (given ``connections``) no more requests were still waiting at
    the end than one per connection (the most a server keeping up with the rate can owe, one
    request in flight per connection); else 1 with one reason per failure."""
    e, after = total["errors"], total["after_term"]
    reasons = []
    waiting = total.get("unanswered_at_end", 0)
    if connections is not None and waiting > connections:
        reasons.append(f"{waiting} requests still waiting when the load ended (the server fell behind the rate)")
    for kind in ("lost", "timeout"):
        if e[kind]:
            reasons.append(f"{e[kind]} requests {'lost' if kind == 'lost' else 'timed out'}")
    if total["mismatches"]:
        reasons.append(f"{total['mismatches']} wrong replies")
    refused = e["refused"] - after["refused"]
    if refused:
        reasons.append(f"{refused} connection attempts refused" + (" before the term" if after["refused"] else ""))
    unsent = e["unsent"] - after["unsent"]
    if unsent:
        reasons.append(f"{unsent} requests unsent (no connection up)")
    for event in events:
        if event.fired_s is None:
            reasons.append(f"event {event.label} not fired (the load ended first)")
        elif event.failed:
            reasons.append(f"event {event.label} failed: {event.failed}")
    if not total["requests"]:
        reasons.append("no request was answered")
    reasons.extend(f"load generator: {failure}" for failure in worker_failures)
    return (1 if reasons else 0), reasons
