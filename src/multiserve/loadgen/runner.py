"""``run_load(spec)``: spawn the workers, release them together, collect and merge.

The green light: every worker connects first and reports ready; the parent then writes one
start time ``t0`` (CLOCK_MONOTONIC, shared by all processes on Linux) and sets an Event, so no
connection starts before another and connect time never counts as request time.

Workers are started with the ``spawn`` method: a fork of a caller that runs threads (pytest-xdist,
rich's live display) could copy a held lock into the child.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import sys
import time
import types

from .result import LoadResult, merge_reports
from .spec import LoadSpec
from .worker import worker_main

# Between setting the Event and t0: enough for every worker to wake up from the Event (a few
# ms on an idle machine; 50 ms leaves room on a loaded 2-core one).
START_DELAY = 0.05
# A spawned worker imports multiserve before it connects: seconds on a loaded machine.
SPAWN_ALLOWANCE = 30.0
# How often the parent refreshes the progress line.
PROGRESS_REFRESH = 0.5


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal integers, larger first (sums to ``total``)."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


@contextlib.contextmanager
def _bare_main():
    """``spawn`` makes each child import the parent's ``__main__`` (to find functions defined
    there). The workers need nothing from it, and a caller's script without a ``__name__`` guard
    would run again in every worker (and code read from stdin cannot be imported at all), so the
    children are started while ``__main__`` is an empty module."""
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = saved


def run_load(spec: LoadSpec, progress=False, on_start=None) -> LoadResult:
    """Runs ``spec`` to the end and returns the merged result. Blocking.

    ``progress``: False, True (a rich live line with elapsed time and requests/s), or a callable
    ``progress(elapsed_s, total_requests)`` called about twice a second. Raises ValueError for a
    bad spec (before starting anything). ``on_start(t0)``, if given, is called once every
    worker has connected (and primed), with the CLOCK_MONOTONIC time (``time.monotonic()``) at
    which the load starts: the measured window (and the timeline's buckets) count from
    ``t0 + spec.warmup``; it must return promptly. Every worker process it starts is ended before it
    returns, also on KeyboardInterrupt.
    """
    spec.validate()
    k = spec.worker_count()
    if spec.requests is not None:
        k = min(k, spec.requests)
    conns = split(spec.connections, k)
    quotas = split(spec.requests, k) if spec.requests is not None else [None] * k
    rates = [spec.rate * c / spec.connections for c in conns] if spec.rate else [None] * k
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    t0 = ctx.RawValue("d", 0.0)
    counters = ctx.RawArray("q", k)
    procs, pipes = [], []
    display = _display(progress)
    try:
        first = 0
        for i in range(k):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=worker_main,
                args=(spec, i, conns[i], first, quotas[i], rates[i], send, go, t0, counters),
                name=f"multiserve-bench-{i}",
                daemon=True,
            )
            with _bare_main():
                p.start()
            send.close()
            procs.append(p)
            pipes.append(recv)
            first += conns[i]
        failures: list[str] = []
        ready = _collect(dict(enumerate(pipes)), "ready", time.monotonic() + spec.connect_timeout + SPAWN_ALLOWANCE, failures)
        t0.value = time.monotonic() + START_DELAY
        go.set()
        if on_start is not None:
            on_start(t0.value)
        limit = spec.warmup + (spec.duration or 0.0) if spec.requests is None else None
        deadline = None if limit is None else t0.value + limit + spec.connect_timeout + 10.0
        done = _collect({i: pipes[i] for i in ready}, "done", deadline, failures, lambda: display(time.monotonic() - t0.value, sum(counters)))
        return merge_reports(spec, list(ready.values()), list(done.values()), failures)
    finally:
        display(None, None)
        for p in procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.kill()  # by this Process object (its own pid), never by name
                p.join(timeout=2.0)
        for pipe in pipes:
            pipe.close()


def _collect(pipes: dict, want: str, deadline, failures: list[str], tick=None) -> dict:
    """Waits for one ``want`` message from each pipe of ``{worker index: pipe}``; returns
    ``{worker index: payload}``. Failed, silent or dead workers are added to ``failures``."""
    index = {id(p): i for i, p in pipes.items()}
    pending = list(pipes.values())
    got = {}
    while pending:
        timeout = PROGRESS_REFRESH if deadline is None else min(PROGRESS_REFRESH, deadline - time.monotonic())
        if timeout <= 0:
            failures.extend(f"worker {index[id(p)]}: no {want} report in time" for p in pending)
            break
        for pipe in multiprocessing.connection.wait(pending, timeout):
            pending.remove(pipe)
            try:
                kind, payload = pipe.recv()
            except (EOFError, OSError):
                failures.append(f"worker {index[id(pipe)]}: exited without a {want} report")
                continue
            if kind == want:
                got[index[id(pipe)]] = payload
            else:
                failures.append(f"worker {index[id(pipe)]}: {payload}")
        if tick:
            tick()
    return got


def _display(progress):
    """The progress callback: a no-op, the caller's callable, or a rich live line."""
    if callable(progress):
        return lambda elapsed, total: None if elapsed is None else progress(elapsed, total)
    if not progress:
        return lambda elapsed, total: None
    from .report import LiveLine

    line = LiveLine()
    return line.update
