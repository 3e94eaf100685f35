"""The matrix: every service x server x connection count, each cell a fresh server under load.

One *run* of a cell: start the server, wait for its ready line, warm it up with a short load,
then drive it with the load generator while sampling its process tree, stop it with SIGTERM and
expect exit 0. ``--repeat R`` runs the whole matrix R times in turn (A B C, A B C: interleaved,
so a slow minute of a shared machine spreads over all cells instead of sinking one), and
:func:`aggregate` folds the runs of a cell into its median and spread.

A run that fails (no ready line, load errors or wrong replies, a crash, a bad exit) is recorded
with ``status="failed"`` and a one-line ``reason``; the matrix goes on with the next cell.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Iterable

from .baselines import BASELINES, serves
from .launcher import Server, ServerFailed, TreeSampler, baseline_command, engine_command

MESSAGE = b"hello world"  # the request the C reference client sends too


@dataclasses.dataclass(frozen=True)
class Cell:
    service: str
    engine: str  # an engine name, or a baseline's name when ``baseline``
    baseline: bool
    connections: int

    def command(self) -> list[str]:
        if self.baseline:
            return baseline_command(self.engine, self.service)
        return engine_command(self.engine, self.service)

    @property
    def key(self) -> tuple:
        return (self.service, self.engine, self.connections)


@dataclasses.dataclass(frozen=True)
class LoadSettings:
    duration: float = 2.0
    warmup: float = 0.5
    # Load-generator processes. One: it drives 100k+ req/s alone here, and a second one takes the
    # server's core (asyncio, 16 connections: 109k req/s with 1 load process, 90k with 2; measured
    # 2026-11-26 on the 2-core reference machine), as the C reference figures keep client and
    # server on a core each. None: the library's default, one per core.
    processes: int | None = 1


def plan(services: Iterable[str], engines: Iterable[str], connections: Iterable[int],
         baselines: bool = True) -> list[Cell]:
    """The cells in run order: per service, engines then baselines, each at every connection count.

    A baseline that cannot serve a service at all (uvloop-protocol and a blocking service) is
    left out, not failed: it is not part of that comparison.
    """
    cells = []
    for service in services:
        servers = [(e, False) for e in engines]
        if baselines:
            servers += [(b, True) for b in BASELINES if serves(b, service)]
        for name, is_baseline in servers:
            cells += [Cell(service, name, is_baseline, c) for c in connections]
    return cells


def _failed(cell: Cell, reason: str, **numbers) -> dict:
    row = {**dataclasses.asdict(cell), "rps": None, "p50_us": None, "p99_us": None, "p999_us": None,
           "errors": 0, "mismatches": 0, "cpu_s": None, "rss_kib": None}
    row.update(numbers, status="failed", reason=reason)
    return row


def run_cell(cell: Cell, load: LoadSettings) -> dict:
    """One run of ``cell``: the numbers of results.json (see the module docstring)."""
    from ..loadgen import LoadSpec, run_load

    def spec(host, port, duration):
        return LoadSpec(host=host, port=port, connections=cell.connections, duration=duration,
                        processes=load.processes, message=MESSAGE, expect="upper")

    try:
        with Server(cell.command()) as server:
            sampler = TreeSampler(server.pid).start()
            try:
                if load.warmup > 0:
                    run_load(spec(server.host, server.port, load.warmup))
                cpu_before = sampler.cpu_seconds()
                result = run_load(spec(server.host, server.port, load.duration))
                cpu_s = sampler.cpu_seconds() - cpu_before
            finally:
                sampler.stop()
            server.stop()
    except ServerFailed as exc:
        return _failed(cell, str(exc))
    except Exception as exc:  # the load generator gave up (refused, timed out): one line
        return _failed(cell, f"load: {type(exc).__name__}: {exc}")
    errors = sum(result.errors.values())
    latency = result.latency_us
    row = {
        **dataclasses.asdict(cell),
        "rps": result.rps, "p50_us": latency["p50"], "p99_us": latency["p99"], "p999_us": latency["p999"],
        "errors": errors, "mismatches": result.mismatches, "cpu_s": cpu_s,
        "rss_kib": sampler.peak_rss // 1024,
        "requests": result.requests, "duration_s": result.duration_s, "load_processes": result.processes,
        "cpu_us_per_request": cpu_s * 1e6 / result.requests if result.requests else None,
        "errors_by_kind": dict(result.errors),
        "status": "ok", "reason": "",
    }
    if errors or result.mismatches or not result.requests:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(result.errors.items()))
        row["status"] = "failed"
        if not result.requests and not errors:
            row["reason"] = f"no reply within the {load.duration:g} s measured (no error either)"
        else:
            row["reason"] = (f"{result.requests} replies, {errors} errors ({kinds or 'none'}), "
                             f"{result.mismatches} wrong replies")
    return row


def run_matrix(cells: list[Cell], load: LoadSettings, repeat: int = 1,
               on_run: Callable[[Cell, int, dict], None] | None = None,
               runner: Callable[[Cell, LoadSettings], dict] = run_cell) -> list[dict]:
    """All runs, interleaved: repeat 1 of every cell, then repeat 2, ... Each run's dict gets
    ``repeat`` (0-based); ``on_run(cell, repeat, row)`` is called after each (progress)."""
    runs = []
    for r in range(repeat):
        for cell in cells:
            started = time.monotonic()
            row = runner(cell, load)
            row["repeat"] = r
            row["wall_s"] = round(time.monotonic() - started, 3)  # start to stop: what a cell costs
            runs.append(row)
            if on_run is not None:
                on_run(cell, r, row)
    return runs


MEDIAN_FIELDS = ("rps", "p50_us", "p99_us", "p999_us", "cpu_s", "rss_kib", "cpu_us_per_request")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(runs: list[dict]) -> list[dict]:
    """One cell per (service, engine, connections), in first-run order.

    Numbers are the median of the cell's successful runs (None if none succeeded); ``errors``
    and ``mismatches`` add up over all runs; ``rps_min``/``rps_max``/``spread_pct`` (max-min over
    median) show the spread. A cell is ``failed`` if any of its runs failed: the reasons are kept.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in runs:
        groups.setdefault((row["service"], row["engine"], row["connections"]), []).append(row)
    cells = []
    for rows in groups.values():
        ok = [r for r in rows if r["status"] == "ok"]
        first = rows[0]
        cell = {k: first[k] for k in ("service", "engine", "baseline", "connections")}
        for field in MEDIAN_FIELDS:
            cell[field] = _median(r.get(field) for r in ok)
        rps = [r["rps"] for r in ok]
        cell["rps_min"] = min(rps) if rps else None
        cell["rps_max"] = max(rps) if rps else None
        cell["spread_pct"] = 100.0 * (max(rps) - min(rps)) / cell["rps"] if rps and cell["rps"] else None
        cell["errors"] = sum(r["errors"] for r in rows)
        cell["mismatches"] = sum(r["mismatches"] for r in rows)
        cell["runs"] = len(rows)
        failed = [r for r in rows if r["status"] != "ok"]
        cell["status"] = "failed" if failed else "ok"
        reasons = list(dict.fromkeys(r["reason"] for r in failed))
        cell["reason"] = (f"{len(failed)} of {len(rows)} runs failed: " if len(rows) > 1 else "") + "; ".join(reasons) \
            if failed else ""
        cell["raw"] = rows
        cells.append(cell)
    return cells
