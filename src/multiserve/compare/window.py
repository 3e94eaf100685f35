"""The server tree's CPU seconds inside a cell's measured window, from timed readings.

Why not two readings by a thread that sleeps until each boundary (what compare did first): a
reading is not an instant. It walks /proc (psutil lists every process to find the tree's
descendants), 3 ms on an idle machine, and its thread may wake late or be kept off the CPU
while it reads: measured here at load ~8, one reading of a 1 s window took 538 ms, another
began 64 ms late, and that cell's figure came out at a quarter of its neighbour's; in a CI run
of the free-threaded build both readings fell after the load and the window read 0.0 s. A
single number taken "at" a boundary cannot tell whether it was.

So every reading is kept with the monotonic times it began and ended (:class:`CpuReading`), and
:func:`window_cpu` derives the CPU at each boundary from the two readings that bracket it: the
last one that *ended* by the boundary and the first one that *began* after it. CPU seconds
grow with time, so the true value at the boundary lies between those two readings, and the
figure's worst-case error is known: the CPU the two brackets hold. (Nearly: a reading is the
larger of two lower bounds per process, tick-sampled utime+stime and the live threads'
scheduler time, see ``launcher._seconds``, so it can step back by a few ms when a thread exits,
e.g. a thread engine's connection threads as the load ends; such a step counts as error too.)
The derivation interpolates inside each bracket (linear in time, between the readings'
midpoints), and returns None (the report then shows no CPU figure, "–") when a boundary is not
bracketed by real readings, or when the worst-case error exceeds :data:`MAX_ERROR_SHARE` of the
figure: a late or slow reading widens its bracket and so turns the figure into None, never
into 0.0 or a guess.

How often there is no figure depends on the machine: about 1 cell in 20 on the GIL build on the
loaded 2-vCPU reference machine, 3 in 10 on the free-threaded build, where single /proc reads
of a server whose threads run in parallel blocked for 70-830 ms (under 4 ms of the reading
thread's CPU; nice -10 did not help). Reading around each boundary from ``LEAD`` before it,
rather than once, and reading the tree as last listed (``TreeSampler.cpu_reading``: 0.3 ms, not
a /proc walk) is what keeps those numbers that low.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, NamedTuple, Sequence

# A figure whose worst case (all of both brackets' CPU on the wrong side of its boundary) is
# above one part in ten is not given. The interpolation's real error is far below that bound
# (under a steady load the CPU rate is steady within a bracket); a tighter share would drop
# figures of short windows on a loaded machine: a 0.3 s window of a server using one core,
# read with 5-20 ms brackets (this machine at load ~8), is 3-13% worst-case.
MAX_ERROR_SHARE = 0.10
# How long before a boundary its readings start: long enough that some reading ends before the
# boundary even when the thread stalls. This machine (2 vCPUs, 35% of their time stolen by the
# hypervisor at the time of writing: /proc/stat's steal column) stalled single readings of
# 0.3 ms for 60-230 ms; a 10 ms lead lost the boundary in 3 of 6 free-threaded cells.
LEAD = 0.100
# From then on the thread reads until one reading begins after the boundary, sleeping between
# readings STEP_SHARE times a reading's own length (at least MIN_STEP): at most a fifth of a core
# for 0.2 s per cell for a big tree (a forking server's 256 children: ~5 ms a reading), ~15 ms
# of CPU per boundary for a thread engine's (0.3 ms a reading).
STEP_SHARE = 4
MIN_STEP = 0.002


class CpuReading(NamedTuple):
    """One reading of the tree's CPU seconds, taken between ``began`` and ``ended``
    (``time.monotonic()``): each process of the tree was read at some instant inside."""
    began: float
    ended: float
    seconds: float

    @property
    def mid(self) -> float:
        return (self.began + self.ended) / 2


def _bracket(readings: Sequence[CpuReading], at: float) -> tuple[CpuReading, CpuReading] | None:
    """The last reading that ended by ``at`` and the first that began at or after it; None if
    either is missing (a reading that spans ``at`` brackets nothing)."""
    before = [r for r in readings if r.ended <= at]
    after = [r for r in readings if r.began >= at]
    if not before or not after:
        return None
    return max(before, key=lambda r: r.ended), min(after, key=lambda r: r.began)


def _interpolate(low: CpuReading, high: CpuReading, at: float) -> float:
    """Linear in time between the readings' midpoints; a later reading that stepped back (both
    are lower bounds) counts as equal to the earlier one, since the tree's CPU never shrinks."""
    span = high.mid - low.mid
    share = 0.0 if span <= 0 else min(1.0, max(0.0, (at - low.mid) / span))
    return low.seconds + share * max(0.0, high.seconds - low.seconds)


def window_cpu(readings: Sequence[CpuReading], start: float, end: float,
               max_error_share: float = MAX_ERROR_SHARE) -> float | None:
    """CPU seconds between the monotonic times ``start`` and ``end``, derived from ``readings``
    (any order), or None: a boundary not bracketed by a reading that ended by it and one that
    began after it, or a worst-case error (the CPU inside the two brackets, or how far a
    bracket's readings stepped back) above ``max_error_share`` of the figure."""
    brackets = [_bracket(readings, start), _bracket(readings, end)]
    if None in brackets:
        return None
    (s_low, s_high), (e_low, e_high) = brackets
    figure = _interpolate(e_low, e_high, end) - _interpolate(s_low, s_high, start)
    # abs: a reading is a lower bound, and can step back when a thread exits (see the module
    # docstring); the step is as uncertain as CPU spent inside the bracket
    worst = abs(s_high.seconds - s_low.seconds) + abs(e_high.seconds - e_low.seconds)
    return figure if worst <= max_error_share * figure else None


def timed(read: Callable[[], float]) -> CpuReading:
    """``read()`` as a reading, stamped with the monotonic times before and after it."""
    began = time.monotonic()
    seconds = read()
    return CpuReading(began, time.monotonic(), seconds)


class WindowCPU:
    """The server tree's CPU seconds inside the measured window only (not the priming, not the
    warm-up), which the load's start ``t0`` fixes (``on_start``, from :func:`run_load`):
    ``[t0 + warmup, t0 + warmup + duration]``, the window the load generator's workers plan.

    ``read()`` returns a :class:`CpuReading` of the tree (``TreeSampler.cpu_reading``). One reading is
    taken now, and a thread reads around each boundary: from ``LEAD`` before it until a
    reading begins after it. ``seconds()`` waits for that thread and derives the figure (:func:`window_cpu`),
    None when the readings do not pin it down (see the module docstring).
    """

    def __init__(self, read: Callable[[], CpuReading], warmup: float, duration: float):
        self.read, self.warmup, self.duration = read, warmup, duration
        self.readings: list[CpuReading] = [read()]
        self.thread: threading.Thread | None = None
        self.t0: float | None = None

    def on_start(self, t0: float) -> None:
        self.t0 = t0
        self.thread = threading.Thread(target=self._read_around, args=self.boundaries(), daemon=True)
        self.thread.start()

    def boundaries(self) -> tuple[float, float]:
        start = self.t0 + self.warmup
        return start, start + self.duration

    def _read_around(self, *boundaries: float) -> None:
        for at in boundaries:
            time.sleep(max(0.0, at - LEAD - time.monotonic()))
            while True:
                reading = self.read()
                self.readings.append(reading)
                if reading.began >= at:
                    break
                left = at - time.monotonic()
                if left > 0:
                    time.sleep(min(left, max(STEP_SHARE * (reading.ended - reading.began), MIN_STEP)))

    def seconds(self) -> float | None:
        if self.thread is None:
            return None
        self.thread.join(timeout=self.warmup + self.duration + 10.0)
        if self.thread.is_alive():
            return None
        return window_cpu(list(self.readings), *self.boundaries())
