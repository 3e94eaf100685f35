"""``cpu``: N CPU-bound tasks serially, by threads, by processes, by a process pool, by a thread pool.

Each task is the tutorials' loop ``res *= i for i in range(1, size)`` (``size`` 100000 by default:
about 2.5 s of one core here). Every timing covers creating the workers, running every task and
joining them, and each task's result is checked, so nothing is timed before it has finished.
"""
from __future__ import annotations

import concurrent.futures

from .common import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Report, Sizes, Stopwatch, cores, default_thread_pool_size,
                     gil_enabled, process_each, speedup_rows, thread_each)

TIMED = True  # are its verdicts about speed (then a busy machine is noted)?
NAME = "cpu"
CLAIM = "processes speed up CPU-bound work (up to one task per core); threads do not (the GIL)"
SIZES = {"default": Sizes(count=12, size=100_000), "quick": Sizes(count=4, size=30_000)}
COLUMNS = ("method", "workers", "seconds", "speedup")
# A speed-up below this is within run-to-run noise on a shared machine, not a real gain.
NOISE = 1.2


def task(size: int) -> int:
    """The tutorial's loop; returns the product's bit length (small to send back, proves the work)."""
    res = 1
    for i in range(1, size):
        res *= i
    return res.bit_length()


def serial(count, size):
    return [task(size) for _ in range(count)]


def threads(count, size):
    return thread_each(task, count, size)


def processes(count, size):
    return process_each(task, count, size)


def process_pool(count, size):
    with concurrent.futures.ProcessPoolExecutor(max_workers=cores()) as pool:
        return list(pool.map(task, [size] * count))


def thread_pool(count, size):
    with concurrent.futures.ThreadPoolExecutor() as pool:
        return list(pool.map(task, [size] * count))


def run(sizes: Sizes, progress) -> Report:
    count, size = sizes.count, int(sizes.size)
    expected = task(size)
    methods = [("serial", serial, 1), ("threads", threads, count), ("processes", processes, count),
               ("process pool", process_pool, cores()), ("thread pool", thread_pool, default_thread_pool_size())]
    rows = []
    for k, (method, fn, workers) in enumerate(methods):
        progress(method, k, len(methods))
        with Stopwatch() as sw:
            results = fn(count, size)
        if results != [expected] * count:
            raise RuntimeError(f"{method}: wrong results {results[:3]}...")
        rows.append({"method": method, "workers": workers, "tasks": count, "size": size,
                     "seconds": round(sw.seconds, 4)})
    progress("done", len(methods), len(methods))
    speedup_rows(rows, rows[0]["seconds"])
    verdict, why = judge({r["method"]: r["speedup"] for r in rows})
    return Report(NAME, CLAIM, verdict, why, rows, COLUMNS)


def judge(speedup: dict) -> tuple[str, str]:
    n = cores()
    best_proc = max(speedup["processes"], speedup["process pool"])
    best_thread = max(speedup["threads"], speedup["thread pool"])
    facts = (f"processes {best_proc:.2f}x serial (the ceiling is {n}x: only {n} cores), "
             f"threads {best_thread:.2f}x")
    if n < 2:
        return INCONCLUSIVE, facts + "; with 1 core nothing can run in parallel"
    gil = gil_enabled()
    if not gil:
        facts += "; this Python runs without the GIL, so threads run Python on every core too"
    if best_proc >= NOISE and best_proc > best_thread * NOISE:
        reason = ("the GIL lets one thread run Python at a time" if gil else
                  "without the GIL threads still lost to processes here (a free-threaded build runs "
                  "one thread's pure Python slower)") if best_thread < NOISE else "threads scaled too"
        return HOLDS, f"{facts}: {reason}"
    if not gil and best_thread >= NOISE:
        return DOES_NOT_HOLD, (facts + ": threads scaled like processes, as they can once the GIL is gone; "
                               "the claim is a GIL build's")
    return DOES_NOT_HOLD, facts + ": processes did not beat threads by more than noise"


def plot(report: Report, path) -> None:
    from .plots import bars

    rows = report.results
    bars(path, [r["method"] for r in rows], [r["seconds"] for r in rows], ylabel="seconds (lower is better)",
         title=f"cpu: {rows[0]['tasks']} tasks on {report.machine['cores']} cores",
         labels=[f"{r['speedup']}x" for r in rows])
