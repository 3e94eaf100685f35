"""What every experiment shares: the report it returns, the machine it ran on, and its sizes.

An experiment module exports ``NAME``, ``CLAIM``, ``SIZES`` (``{"default": Sizes, "quick": Sizes}``),
``run(sizes, progress) -> Report`` and ``plot(report, path)``. ``Report.to_json()`` is the JSON
contract of issue 4: ``experiment, claim, verdict, why, machine, results``.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import platform
import threading
import time
from typing import Any, Callable

from .. import interpreter
from ..interpreter import gil_enabled  # noqa: F401  (the experiments' name for it)

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"
VERDICTS = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)


def cores() -> int:
    """CPUs this process may run on (its affinity mask), which is what parallel work can use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_thread_pool_size() -> int:
    """What ``ThreadPoolExecutor()`` picks when not told: min(32, cores + 4) since Python 3.8 (read
    from a real executor, so a future change shows up here)."""
    import concurrent.futures

    return concurrent.futures.ThreadPoolExecutor()._max_workers


def machine() -> dict:
    """Where the experiment ran; ``gil_enabled`` is read when the report is made, after every
    import of the run (a free-threaded build can have turned it back on: then a warning says so)."""
    info = interpreter.describe()
    interpreter.warn_if_gil_reenabled("this lab process")
    return {"cores": cores(), "python": platform.python_version(), "gil_enabled": info["gil_enabled"],
            "free_threaded": info["free_threaded"], "executable": info["executable"]}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big a run is. ``count``: tasks, threads, units or waiters; ``size``: work per task
    (its meaning is in each experiment's docstring)."""

    count: int
    size: float


@dataclasses.dataclass
class Report:
    """One experiment's outcome. ``columns`` chooses the row keys shown in the table (JSON keeps all)."""

    experiment: str
    claim: str
    verdict: str
    why: str
    results: list[dict]
    columns: tuple[str, ...] = ()
    machine: dict = dataclasses.field(default_factory=machine)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "claim": self.claim, "verdict": self.verdict,
                "why": self.why, "machine": self.machine, "results": self.results}


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (``time.perf_counter``, monotonic)."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


# Called before each step of an experiment: (what runs now, steps done, steps in all).
Progress = Callable[[str, int, int], None]


def no_progress(label: str, done: int, total: int) -> None:
    pass


def speedup_rows(rows: list[dict], baseline_seconds: float) -> list[dict]:
    """Add ``speedup`` (baseline / seconds, rounded) to each timed row."""
    for row in rows:
        row["speedup"] = round(baseline_seconds / row["seconds"], 2) if row["seconds"] > 0 else None
    return rows


def busy_note(load_before: float) -> str:
    """A caveat for timing verdicts when other work was already using the cores (1-minute load
    average at the start, from the OS) -- on a shared machine, ratios then lean towards 1x."""
    if load_before >= cores() / 2:
        return f" (the machine was busy: load average {load_before:.1f} on {cores()} cores at the start)"
    return ""


def thread_each(task: Callable[[int], Any], count: int, size: int) -> list:
    """``task(size)`` by ``count`` threads, one each, every one joined before returning (the
    tutorials' mistake is stopping the clock before the join)."""
    results = [None] * count

    def work(k):
        results[k] = task(size)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results


def _store_result(task, size, out, k):
    out[k] = task(size)


def process_each(task: Callable[[int], int], count: int, size: int) -> list[int]:
    """``task(size)`` by ``count`` processes, one each, joined; ``task`` must be a module-level
    function returning an int (each child writes only its own slot of a shared array)."""
    out = multiprocessing.Array("q", count, lock=False)
    workers = [multiprocessing.Process(target=_store_result, args=(task, size, out, k)) for k in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return list(out)
