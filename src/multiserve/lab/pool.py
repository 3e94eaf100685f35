"""``pool``: ``count`` small tasks (1,000) by a new thread or process per task, against a fixed
pool of threads or processes used through ``submit``/``result``, ``map`` and
``add_done_callback``.

A task sums ``i * i`` for ``i < size`` (1,000: some tens of microseconds), so creating the
worker is most of the cost. Every result is checked, and with callbacks the clock stops only
when the last callback has run (``wait()`` on the futures can return before their callbacks
run). Peaks come from a second run of each method, sampled every ``SAMPLE_SECONDS`` by a thread
with psutil (so the sampling does not slow the timed run): threads
of this process, child processes, and memory as this process's RSS plus its children's (RSS
counts shared pages again in every child: an upper bound). Short-lived peaks may be missed.
"""
from __future__ import annotations

import concurrent.futures
import threading

import psutil

from .common import (DOES_NOT_HOLD, HOLDS, Report, Sizes, Stopwatch, cores, default_thread_pool_size, process_each,
                     thread_each)

TIMED = True  # are its verdicts about speed (then a busy machine is noted)?
NAME = "pool"
CLAIM = "for many small tasks a fixed pool beats a new thread or process per task, and bounds them"
SIZES = {"default": Sizes(count=1000, size=1000), "quick": Sizes(count=200, size=1000)}
COLUMNS = ("method", "workers", "seconds", "peak_threads", "peak_processes", "peak_mib")
SAMPLE_SECONDS = 0.01  # 100 samples a second: fine enough for runs of a second, cheap on 2 cores


def task(size: int) -> int:
    return sum(i * i for i in range(size))


class Sampler:
    """Samples threads, child processes and memory in a thread until stopped; keeps the peaks."""

    def __init__(self):
        self.me = psutil.Process()
        # Children alive before the run (a forkserver, multiprocessing's resource tracker) are not its own.
        self.before = {child.pid for child in self.me.children()}
        self.peak_threads = self.peak_processes = self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        children = [child for child in self.me.children() if child.pid not in self.before]
        rss = self.me.memory_info().rss
        for child in children:
            try:
                rss += child.memory_info().rss
            except psutil.Error:  # exited between the listing and the reading
                pass
        self.peak_threads = max(self.peak_threads, self.me.num_threads() - 1)  # not the sampler itself
        self.peak_processes = max(self.peak_processes, len(children))
        self.peak_rss = max(self.peak_rss, rss)

    def _run(self):
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def thread_per_task(count, size):
    return thread_each(task, count, size)


def process_per_task(count, size):
    return process_each(task, count, size)


def submit_result(pool, count, size):
    futures = [pool.submit(task, size) for _ in range(count)]
    return [f.result() for f in futures]


def mapped(pool, count, size):
    return list(pool.map(task, [size] * count))


def callbacks(pool, count, size):
    results, lock, done = [], threading.Lock(), threading.Event()

    def collect(future):
        with lock:
            results.append(future.result())
            if len(results) == count:
                done.set()

    for _ in range(count):
        pool.submit(task, size).add_done_callback(collect)
    done.wait()
    return results


def _pooled(executor, workers, use):
    def method(count, size):
        with executor(max_workers=workers) as pool:
            return use(pool, count, size)

    return method


def methods():
    threads = default_thread_pool_size()
    procs = cores()
    pools = [("thread pool", concurrent.futures.ThreadPoolExecutor, threads),
             ("process pool", concurrent.futures.ProcessPoolExecutor, procs)]
    uses = [("submit/result", submit_result), ("map", mapped), ("add_done_callback", callbacks)]
    return [("thread per task", thread_per_task, None), ("process per task", process_per_task, None),
            *[(f"{p}: {u}", _pooled(executor, workers, use), workers) for p, executor, workers in pools
              for u, use in uses]]


def run(sizes: Sizes, progress) -> Report:
    count, size = sizes.count, int(sizes.size)
    expected, rows, chosen = task(size), [], methods()
    for k, (method, fn, workers) in enumerate(chosen):
        progress(method, k, len(chosen))
        with Stopwatch() as sw:
            results = fn(count, size)
        with Sampler() as sampler:  # a second run: the sampler's own work stays out of the timing
            results += fn(count, size)
        if sorted(results) != [expected] * (2 * count):
            raise RuntimeError(f"{method}: wrong results")
        rows.append({"method": method, "tasks": count, "workers": workers or count, "seconds": round(sw.seconds, 4),
                     "peak_threads": sampler.peak_threads, "peak_processes": sampler.peak_processes,
                     "peak_mib": round(sampler.peak_rss / 2**20, 1)})
    progress("done", len(chosen), len(chosen))
    verdict, why = judge(rows)
    return Report(NAME, CLAIM, verdict, why, rows, COLUMNS)


def judge(rows) -> tuple[str, str]:
    by = {r["method"]: r for r in rows}
    best = {kind: min((r for r in rows if r["method"].startswith(kind + " pool")), key=lambda r: r["seconds"])
            for kind in ("thread", "process")}
    facts = "; ".join(
        f"{kind} per task {by[kind + ' per task']['seconds']:.2f} s (peak {by[kind + ' per task'][peak]} {noun}) vs "
        f"{best[kind]['method']} {best[kind]['seconds']:.2f} s (peak {best[kind][peak]})"
        for kind, peak, noun in (("thread", "peak_threads", "threads"), ("process", "peak_processes", "processes")))
    faster = all(best[k]["seconds"] < by[k + " per task"]["seconds"] for k in ("thread", "process"))
    return (HOLDS if faster else DOES_NOT_HOLD), facts


def plot(report: Report, path) -> None:
    from .plots import bars

    rows = report.results
    bars(path, [r["method"].replace(": ", "\n") for r in rows], [r["seconds"] for r in rows],
         ylabel="seconds (log scale)", log=True, title=f"pool: {rows[0]['tasks']} small tasks",
         labels=[f"{r['seconds']:.2f}s" for r in rows])
