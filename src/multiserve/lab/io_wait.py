"""``io``: N blocking waits (``sleep(size)``: 100 x 2 s by default) by threads, processes, a thread
pool, gevent greenlets and asyncio tasks.

A sleep stands for any blocking call that waits on the outside world (a socket, a disk, a
database): the thread releases the GIL while it waits. Every unit is joined before the clock
stops. Running them serially would take N x size; that row is computed, not run, and says so.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import subprocess
import sys
import threading
import time

from ..engines import unavailable
from .common import DOES_NOT_HOLD, HOLDS, Report, Sizes, Stopwatch, default_thread_pool_size, gil_enabled

TIMED = True  # are its verdicts about speed (then a busy machine is noted)?
NAME = "io"
CLAIM = "threads (and greenlets, coroutines) overlap blocking IO: N waits take about one wait, despite the GIL"
SIZES = {"default": Sizes(count=100, size=2.0), "quick": Sizes(count=20, size=0.2)}
COLUMNS = ("method", "workers", "seconds", "speedup", "note")
# "About one wait": within 50% of it, leaving room for creating N threads on a busy machine.
SLACK = 1.5


def threads(count, seconds):
    workers = [threading.Thread(target=time.sleep, args=(seconds,)) for _ in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def processes(count, seconds):
    workers = [multiprocessing.Process(target=time.sleep, args=(seconds,)) for _ in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def thread_pool(count, seconds):
    with concurrent.futures.ThreadPoolExecutor() as pool:
        list(pool.map(time.sleep, [seconds] * count))


def asyncio_tasks(count, seconds):
    async def main():
        await asyncio.gather(*(asyncio.sleep(seconds) for _ in range(count)))

    asyncio.run(main())


def gevent_greenlets(count, seconds) -> float:
    """Runs in a subprocess (see gevent_io); returns the time measured inside it."""
    out = subprocess.run([sys.executable, "-m", "multiserve.lab.gevent_io", str(count), str(seconds)],
                         capture_output=True, text=True, timeout=60 + 2 * count * seconds, check=True)
    return json.loads(out.stdout)["seconds"]


def run(sizes: Sizes, progress) -> Report:
    count, seconds = sizes.count, float(sizes.size)
    pool_workers = default_thread_pool_size()
    methods = [("threads", threads, count, ""), ("processes", processes, count, ""),
               ("thread pool", thread_pool, pool_workers, f"default size: {pool_workers} at a time"),
               ("asyncio tasks", asyncio_tasks, count, "asyncio.sleep (a blocking sleep would serialize)"),
               ("gevent greenlets", gevent_greenlets, count, "in a subprocess, timed inside it")]
    serial = count * seconds
    rows = [{"method": "serial", "workers": 1, "seconds": serial, "computed": True,
             "note": f"computed, not run: {count} x {seconds:g} s"}]
    for k, (method, fn, workers, note) in enumerate(methods):
        progress(method, k, len(methods))
        if method == "gevent greenlets" and (reason := unavailable("gevent")):
            rows.append({"method": method, "workers": workers, "seconds": None, "computed": False,
                         "skipped": reason, "note": f"skipped: {reason}"})
            continue
        with Stopwatch() as sw:
            inside = fn(count, seconds)  # only gevent's returns a time: measured inside its process
        rows.append({"method": method, "workers": workers, "seconds": round(inside or sw.seconds, 4),
                     "computed": False, "note": note})
    progress("done", len(methods), len(methods))
    for row in rows:
        row["speedup"] = None if row["seconds"] is None else round(serial / row["seconds"], 1)
        row["tasks"], row["wait"] = count, seconds
    verdict, why = judge({r["method"]: r["seconds"] for r in rows if r["seconds"] is not None}, seconds, count,
                         pool_workers, skipped={r["method"]: r["skipped"] for r in rows if r.get("skipped")})
    return Report(NAME, CLAIM, verdict, why, rows, COLUMNS)


def judge(took: dict, seconds: float, count: int, pool_workers: int, skipped: dict | None = None) -> tuple[str, str]:
    """``took``: seconds per method that ran; ``skipped``: method -> why it could not run here."""
    skipped = skipped or {}
    greenlets = f"greenlets {took['gevent greenlets']:.2f} s, " if "gevent greenlets" in took else ""
    facts = (f"{count} waits of {seconds:g} s: threads {took['threads']:.2f} s, {greenlets}"
             f"asyncio {took['asyncio tasks']:.2f} s, processes "
             f"{took['processes']:.2f} s; serial would take {count * seconds:g} s")
    skipped = "".join(f"; {m} not run: {why}" for m, why in skipped.items())
    pool = (f"; the default thread pool runs only {pool_workers} at a time, so it took "
            f"{took['thread pool']:.2f} s: size a pool for IO by the waits, not the cores")
    overlapped = all(took[m] <= SLACK * seconds for m in ("threads", "gevent greenlets", "asyncio tasks") if m in took)
    if overlapped:
        why = ": a waiting thread releases the GIL" if gil_enabled() else ": a waiting thread blocks only itself (no GIL here)"
        return HOLDS, facts + why + skipped + (pool if count > pool_workers else "")
    return DOES_NOT_HOLD, facts + f": not all overlapped within {SLACK}x one wait" + skipped


def plot(report: Report, path) -> None:
    from .plots import bars

    rows = report.results
    rows = [r for r in rows if r["seconds"] is not None]  # a skipped method has no bar
    bars(path, [r["method"] for r in rows], [r["seconds"] for r in rows], ylabel="seconds (log scale)",
         title=f"io: {rows[0]['tasks']} waits of {rows[0]['wait']:g} s (serial is computed)",
         labels=[f"{r['seconds']:.3g}s" for r in rows], log=True)
