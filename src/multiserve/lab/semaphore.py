"""``semaphore``: ``count`` workers (20) behind ``Semaphore(5)``, each holding a slot ``size``
seconds (0.2).

Concurrency is counted under a separate lock at the moment a worker enters and leaves, so the
peak is exact, not sampled. Each worker also takes the lowest free slot number, which is what the
timeline plot draws: at most 5 lanes, each used by one worker at a time.
"""
from __future__ import annotations

import math
import threading
import time

from .common import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Report, Sizes, Stopwatch

TIMED = False  # are its verdicts about speed (then a busy machine is noted)?
NAME = "semaphore"
LIMIT = 5  # the Semaphore(5)
CLAIM = f"Semaphore({LIMIT}) lets at most {LIMIT} workers in at once (and, with enough waiting, exactly {LIMIT})"
SIZES = {"default": Sizes(count=20, size=0.2), "quick": Sizes(count=20, size=0.03)}
COLUMNS = ("limit", "workers", "peak_concurrency", "seconds", "ideal_seconds")


class Tracker:
    """Counts who is inside; hands out slot numbers; keeps (slot, start, end, worker) spans."""

    def __init__(self, limit):
        self._lock = threading.Lock()
        self.active = self.peak = 0
        self.free = list(range(limit))
        self.spans = []
        self.t0 = time.perf_counter()

    def enter(self) -> tuple[int, float]:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.free.sort()
            return self.free.pop(0) if self.free else -1, time.perf_counter() - self.t0

    def leave(self, slot, start, worker):
        with self._lock:
            self.active -= 1
            self.free.append(slot)
            self.spans.append((slot, start, time.perf_counter() - self.t0, worker))


def worker(k, semaphore, tracker, hold):
    with semaphore:
        slot, start = tracker.enter()
        time.sleep(hold)
        tracker.leave(slot, start, k)


def run(sizes: Sizes, progress) -> Report:
    count, hold = sizes.count, float(sizes.size)
    progress(f"{count} workers", 0, 1)
    semaphore, tracker = threading.Semaphore(LIMIT), Tracker(LIMIT)
    threads = [threading.Thread(target=worker, args=(k, semaphore, tracker, hold)) for k in range(count)]
    with Stopwatch() as sw:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    progress("done", 1, 1)
    row = {"limit": LIMIT, "workers": count, "peak_concurrency": tracker.peak, "seconds": round(sw.seconds, 4),
           "ideal_seconds": round(math.ceil(count / LIMIT) * hold, 4), "hold": hold,
           "spans": [{"slot": s, "start": round(a, 5), "end": round(b, 5), "worker": w} for s, a, b, w in tracker.spans]}
    verdict, why = judge(row)
    return Report(NAME, CLAIM, verdict, why, [row], COLUMNS)


def judge(row) -> tuple[str, str]:
    facts = (f"peak {row['peak_concurrency']} inside at once with limit {row['limit']}; {row['workers']} workers took "
             f"{row['seconds']:.2f} s against {row['ideal_seconds']:.2f} s for {math.ceil(row['workers'] / row['limit'])}"
             f" full waves")
    if row["peak_concurrency"] > row["limit"]:
        return DOES_NOT_HOLD, facts + ": the limit was exceeded"
    if row["peak_concurrency"] < min(row["limit"], row["workers"]):
        return INCONCLUSIVE, facts + ": the workers never overlapped enough to reach the limit"
    return HOLDS, facts


def plot(report: Report, path) -> None:
    from .plots import timeline

    row = report.results[0]
    timeline(path, [(s["slot"], s["start"], s["end"], str(s["worker"])) for s in row["spans"]],
             ylabel="slot", title=f"semaphore: {row['workers']} workers, Semaphore({row['limit']}): "
             f"peak {row['peak_concurrency']}")
