"""``event``: ``count`` waiters (100) released by one ``Event.set()``: threads, asyncio tasks and
processes, ``size`` rounds each (3); the median round is shown.

Every waiter announces it is about to wait, then waits; the setter reads the clock just before
``set()`` and each waiter reads it as it wakes (``time.perf_counter``: CLOCK_MONOTONIC on Linux,
one clock for every process, so the processes' times compare too). The spread is last wake minus
first wake: how "at once" all at once really is.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import threading
import time

from .common import DOES_NOT_HOLD, HOLDS, Report, Sizes, cores, gil_enabled

TIMED = True  # are its verdicts about speed (then a busy machine is noted)?
NAME = "event"
CLAIM = "one Event.set() releases all of its waiters at once"
SIZES = {"default": Sizes(count=100, size=3), "quick": Sizes(count=20, size=1)}
COLUMNS = ("method", "waiters", "woken", "first_ms", "last_ms", "spread_ms")
READY_TIMEOUT = 60.0  # seconds for every waiter to be in place (processes on a busy machine)


def threads_round(count) -> tuple[float, list[float]]:
    event, ready, woke = threading.Event(), threading.Semaphore(0), []

    def waiter():
        ready.release()
        event.wait()
        woke.append(time.perf_counter())  # list.append is atomic: under the GIL, and by the list's lock without it

    workers = [threading.Thread(target=waiter) for _ in range(count)]
    for w in workers:
        w.start()
    for _ in range(count):
        ready.acquire(timeout=READY_TIMEOUT)
    t_set = time.perf_counter()
    event.set()
    for w in workers:
        w.join()
    return t_set, woke


def asyncio_round(count) -> tuple[float, list[float]]:
    async def main():
        event, woke = asyncio.Event(), []

        async def waiter():
            await event.wait()
            woke.append(time.perf_counter())

        tasks = [asyncio.create_task(waiter()) for _ in range(count)]
        await asyncio.sleep(0)  # one turn of the loop: every task is now inside event.wait()
        t_set = time.perf_counter()
        event.set()
        await asyncio.gather(*tasks)
        return t_set, woke

    return asyncio.run(main())


def _process_waiter(k, ready, event, woke):
    ready.release()
    event.wait()
    woke[k] = time.perf_counter()


def processes_round(count) -> tuple[float, list[float]]:
    ready, event, woke = multiprocessing.Semaphore(0), multiprocessing.Event(), multiprocessing.Array("d", count)
    workers = [multiprocessing.Process(target=_process_waiter, args=(k, ready, event, woke)) for k in range(count)]
    for w in workers:
        w.start()
    for _ in range(count):
        ready.acquire(timeout=READY_TIMEOUT)
    t_set = time.perf_counter()
    event.set()
    for w in workers:
        w.join()
    return t_set, [t for t in woke if t > 0]


METHODS = {"threads": threads_round, "asyncio tasks": asyncio_round, "processes": processes_round}


def run(sizes: Sizes, progress) -> Report:
    count, rounds = sizes.count, max(1, int(sizes.size))
    rows, steps = [], len(METHODS) * rounds
    for m, (method, one_round) in enumerate(METHODS.items()):
        tries = []
        for r in range(rounds):
            progress(f"{method}, round {r + 1}", m * rounds + r, steps)
            t_set, woke = one_round(count)
            wake_ms = sorted((t - t_set) * 1000 for t in woke)
            tries.append({"method": method, "waiters": count, "woken": len(wake_ms),
                          "first_ms": round(wake_ms[0], 3) if wake_ms else None,
                          "last_ms": round(wake_ms[-1], 3) if wake_ms else None,
                          "spread_ms": round(wake_ms[-1] - wake_ms[0], 3) if wake_ms else None,
                          "wake_ms": [round(w, 3) for w in wake_ms]})
        median = statistics.median_low([t["spread_ms"] or 0 for t in tries])
        row = next(t for t in tries if (t["spread_ms"] or 0) == median)
        row["rounds"], row["round_spreads_ms"] = rounds, [t["spread_ms"] for t in tries]
        rows.append(row)
    progress("done", steps, steps)
    verdict, why = judge(rows)
    return Report(NAME, CLAIM, verdict, why, rows, COLUMNS)


def judge(rows) -> tuple[str, str]:
    spreads = "; ".join(f"{r['method']} woke over {r['spread_ms']:.2f} ms" for r in rows)
    if all(r["woken"] == r["waiters"] for r in rows):
        return HOLDS, (f"every waiter woke ({rows[0]['waiters']} each). 'At once' is a stretch: {spreads}. "
                       + ("Threads wake one by one as each gets the GIL back, " if gil_enabled() else
                          "Threads wake one by one (no GIL here: as each is scheduled on a core and re-takes the "
                          "Event's lock), ")
                       + "tasks one by one on their loop, "
                       f"processes one by one as each re-takes the Event's shared lock, {cores()} cores for them all")
    return DOES_NOT_HOLD, "not every waiter woke: " + spreads


def plot(report: Report, path) -> None:
    from .plots import strips

    strips(path, {r["method"]: r["wake_ms"] for r in report.results}, xlabel="ms after set() (each mark: a waiter)",
           title=f"event: {report.results[0]['waiters']} waiters released by one set()")
