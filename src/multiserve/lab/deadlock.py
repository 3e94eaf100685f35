"""``deadlock``: the tutorial's threads taking lock A then B, and B then A, under ``lockdep``.

``count`` threads (2 by default: the tutorial; more makes the dining philosophers) sit in a ring
of as many locks; thread k takes lock k, pauses, then takes lock k+1. Three runs:

* **opposite order**: every thread holds its first lock before any takes its second (a barrier
  stands in for the tutorial's pause, so the deadlock is certain, not likely). lockdep finds the
  cycle, reports it and stops one thread with ``DeadlockError``; the run ends within the bound.
* **opposite order, lucky timing**: the same code, threads run one after the other. No deadlock,
  but lockdep still flags the inversion, as the kernel's lockdep does.
* **one global order**: each thread takes the lower-numbered lock first; everything completes.
"""
from __future__ import annotations

import threading
import time

from ..lockdep import Checker, DeadlockError
from .common import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Report, Sizes, Stopwatch

TIMED = False  # are its verdicts about speed (then a busy machine is noted)?
NAME = "deadlock"
CLAIM = "locks taken in opposite orders deadlock; one global lock order prevents it"
SIZES = {"default": Sizes(count=2, size=0.1), "quick": Sizes(count=2, size=0.02)}
COLUMNS = ("variant", "deadlocked", "detected", "completed", "seconds", "summary")
# A run that is not over by then hung: lockdep reports within its poll period (0.1 s) of the
# cycle closing, so this is ample, and keeps the experiment bounded whatever happens.
BOUND_SECONDS = 10.0


def diner(first, second, pause, outcome, k):
    try:
        with first:
            pause()
            with second:
                outcome[k] = "done"
    except DeadlockError:
        outcome[k] = "stopped by lockdep"


def one_run(count, variant, pause_seconds) -> dict:
    checker = Checker()
    locks = [checker.Lock(name=f"lock_{chr(ord('a') + k)}") for k in range(count)]
    outcome = [None] * count
    barrier = threading.Barrier(count, timeout=BOUND_SECONDS)

    def pause():
        if variant == "opposite order":
            barrier.wait()  # every thread now holds its first lock
        else:
            time.sleep(pause_seconds)

    def pair(k):
        first, second = locks[k], locks[(k + 1) % count]
        if variant == "one global order" and locks.index(second) < locks.index(first):
            first, second = second, first
        return first, second

    threads = [threading.Thread(target=diner, args=(*pair(k), pause, outcome, k), name=f"thread-{k + 1}",
                                daemon=True) for k in range(count)]
    with Stopwatch() as sw:
        deadline = time.monotonic() + BOUND_SECONDS
        for t in threads:
            t.start()
            if variant == "opposite order, lucky timing":
                t.join(BOUND_SECONDS)  # one after the other: no overlap, no deadlock
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
    hung = any(t.is_alive() for t in threads)
    reports = checker.deadlocks + checker.inversions
    cycle = reports[0].to_json() if reports else None
    return {"variant": variant, "threads": count, "deadlocked": bool(checker.deadlocks), "detected": bool(reports),
            "completed": not hung and all(o == "done" for o in outcome), "hung": hung,
            "outcome": outcome, "seconds": round(sw.seconds, 4), "cycle": cycle,
            "summary": _summary(cycle), "reports": [r.describe() for r in reports]}


def _summary(cycle) -> str:
    if cycle is None:
        return "no report"
    ring = " -> ".join([*cycle["locks"], cycle["locks"][0]])
    return f"{cycle['kind']}: {ring} ({', '.join(cycle['threads'])})"


VARIANTS = ("opposite order", "opposite order, lucky timing", "one global order")


def run(sizes: Sizes, progress) -> Report:
    rows = []
    for k, variant in enumerate(VARIANTS):
        progress(variant, k, len(VARIANTS))
        rows.append(one_run(max(2, sizes.count), variant, float(sizes.size)))
    progress("done", len(VARIANTS), len(VARIANTS))
    verdict, why = judge(*rows)
    return Report(NAME, CLAIM, verdict, why, rows, COLUMNS)


def judge(opposite, lucky, ordered) -> tuple[str, str]:
    if any(r["hung"] for r in (opposite, lucky, ordered)):
        return INCONCLUSIVE, f"a run was still blocked after {BOUND_SECONDS:g} s: lockdep missed a cycle"
    facts = (f"opposite order: {'deadlock found by lockdep and broken' if opposite['deadlocked'] else 'no deadlock'}"
             f" in {opposite['seconds']:.2f} s; lucky timing: {'completed' if lucky['completed'] else 'did not complete'}"
             f", inversion {'flagged' if lucky['detected'] else 'missed'}; one global order: "
             f"{'completed, nothing reported' if ordered['completed'] and not ordered['detected'] else 'failed'}")
    if opposite["deadlocked"] and ordered["completed"] and not ordered["detected"]:
        return HOLDS, facts + (". Lucky timing is the trap: the same code passes until the day it does not; "
                               "an order checker catches it on a passing run")
    return DOES_NOT_HOLD, facts


def plot(report: Report, path) -> None:
    from .plots import graph

    cycle = report.results[0]["cycle"]
    if cycle and cycle["kind"] == "deadlock":
        edges = [(link["holds"], link["waits_for"], f"{link['thread']} holds {link['holds']},\nwaits for "
                  f"{link['waits_for']}") for link in cycle["links"]]
    else:
        edges = [("?", "?", "no deadlock was found")]
    graph(path, edges, title="deadlock: the wait-for cycle lockdep reported")
