"""``spawn``: what creating, starting and joining a thread costs, against a process started by
fork, forkserver and spawn.

``count`` units of each kind (50 by default) are created and started; the clock runs until every
unit has signalled that it is running, then (clock stopped) memory is read while all of them are
alive, then the clock runs again from releasing them until every one is joined. So the time is
the true cost of a running unit, not of ``start()`` returning early. Memory per unit: a thread's
is the growth of this process's RSS; a process's is its USS (pages only it holds), because RSS
would count the pages it shares with its parent again in every child.
"""
from __future__ import annotations

import multiprocessing
import threading

import psutil

from .common import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Report, Sizes, Stopwatch

TIMED = True  # are its verdicts about speed (then a busy machine is noted)?
NAME = "spawn"
CLAIM = "creating a process costs far more (10x or more) than creating a thread"
SIZES = {"default": Sizes(count=50, size=1), "quick": Sizes(count=10, size=1)}
COLUMNS = ("method", "units", "seconds", "us_per_unit", "kib_per_unit")
FAR_MORE = 10  # "far more": an order of magnitude
READY_TIMEOUT = 60.0  # seconds; spawn re-imports Python in every child, so be generous


def unit(running, release):
    """A unit's whole life: say it is running, wait to be released, exit."""
    running.release()
    release.wait()


def _measure(units, running, release, count, memory) -> dict:
    with Stopwatch() as started:
        for u in units:
            u.start()
        for _ in range(count):
            if not running.acquire(timeout=READY_TIMEOUT):
                raise RuntimeError("a unit did not start in time")
    kib = memory()
    with Stopwatch() as joined:
        release.set()
        for u in units:
            u.join()
    seconds = started.seconds + joined.seconds
    return {"units": count, "seconds": round(seconds, 4), "us_per_unit": round(seconds / count * 1e6, 1),
            "kib_per_unit": round(kib / count, 1)}


def threads(count) -> dict:
    me = psutil.Process()
    before = me.memory_info().rss
    running, release = threading.Semaphore(0), threading.Event()
    units = [threading.Thread(target=unit, args=(running, release)) for _ in range(count)]
    return _measure(units, running, release, count, lambda: (me.memory_info().rss - before) / 1024)


def processes(method, count) -> dict:
    ctx = multiprocessing.get_context(method)
    running, release = ctx.Semaphore(0), ctx.Event()
    units = [ctx.Process(target=unit, args=(running, release)) for _ in range(count)]

    def memory():
        return sum(psutil.Process(u.pid).memory_full_info().uss for u in units) / 1024

    return _measure(units, running, release, count, memory)


def run(sizes: Sizes, progress) -> Report:
    count = sizes.count
    methods = ["thread", *[m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()]]
    rows = []
    for k, method in enumerate(methods):
        progress(method, k, len(methods))
        row = threads(count) if method == "thread" else processes(method, count)
        rows.append({"method": method if method == "thread" else f"process ({method})", **row})
    progress("done", len(methods), len(methods))
    thread_us = rows[0]["us_per_unit"]
    for row in rows:
        row["vs_thread"] = round(row["us_per_unit"] / thread_us, 1)
    verdict, why = judge(rows)
    return Report(NAME, CLAIM, verdict, why, rows, (*COLUMNS, "vs_thread"))


def judge(rows) -> tuple[str, str]:
    """Judged on this platform's default start method: what a plain ``Process()`` uses."""
    thread, procs = rows[0], {r["method"]: r for r in rows[1:]}
    default = procs.get(f"process ({multiprocessing.get_start_method()})")
    if default is None:
        return INCONCLUSIVE, "the default process start method was not measured"
    others = ", ".join(f"{name} {r['vs_thread']:.0f}x" for name, r in procs.items() if r is not default)
    facts = (f"a thread costs {thread['us_per_unit']:.0f} us and about {thread['kib_per_unit']:.0f} KiB; "
             f"a {default['method']}, the default here, {default['us_per_unit']:.0f} us "
             f"({default['vs_thread']:.1f}x) and {default['kib_per_unit']:.0f} KiB of its own; {others}")
    if default["vs_thread"] >= FAR_MORE:
        return HOLDS, facts
    return DOES_NOT_HOLD, facts + f": the default stays under {FAR_MORE}x (copy-on-write fork is cheap)"


def plot(report: Report, path) -> None:
    from .plots import bars

    rows = report.results
    bars(path, [r["method"] for r in rows], [r["us_per_unit"] for r in rows],
         ylabel="microseconds per unit (log scale)", log=True,
         title=f"spawn: create + start + join, {rows[0]['units']} units",
         labels=[f"{r['us_per_unit']:.0f} us, {r['kib_per_unit']:.0f} KiB" for r in rows])
