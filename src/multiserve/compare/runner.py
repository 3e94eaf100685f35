"""The whole comparison as a library call: matrix, idle check, then results.json, plots, report.md.

:func:`run_compare` takes validated :class:`Options` (the CLI validates names first) and never
raises for a failing server: that becomes a failed cell. It raises OSError only if the output
directory cannot be written.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

from . import analysis, idle, machine, peers, pythons, report
from .matrix import BASELINE, LoadSettings, aggregate, expect_for, http_plan, plan, run_cell, run_matrix

# A baseline served by a library an engine needs can run only where that engine can.
BASELINE_NEEDS_ENGINE = {"gevent-streamserver": "gevent", "gunicorn-gevent": "gevent"}


@dataclasses.dataclass
class Options:
    engines: list[str]
    services: list[str]
    connections: list[int]
    load: LoadSettings = dataclasses.field(default_factory=LoadSettings)
    repeat: int = 1
    baselines: bool = True
    idle_connections: int = 0  # 0: no idle check
    out: Path = Path("report")
    command: str = "multiserve compare"
    servers: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # --server NAME=COMMAND
    protocol: str = "line"  # "http": ``services`` are workloads (paths), ``apps`` are served
    apps: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # HTTP: (module:name, wsgi|asgi)
    skip_peers: list[str] = dataclasses.field(default_factory=list)  # HTTP: peers not installed
    # --python NAME=PATH, each with what it said of itself (``multiserve engines --json``:
    # {"interpreter": {...}, "engines": {name: reason or None}}); empty: this interpreter alone
    pythons: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    interpreters: dict = dataclasses.field(default_factory=dict)

    def _pythons(self) -> list[tuple[str, str]]:
        return self.pythons or [("", "")]

    def reason_unavailable(self, cell) -> str | None:
        """Why ``cell``'s server cannot run under its interpreter, or None."""
        engine = BASELINE_NEEDS_ENGINE.get(cell.engine) if cell.kind == BASELINE else cell.engine.partition("/")[0]
        if cell.python:
            return (self.interpreters.get(cell.python, {}).get("engines") or {}).get(engine)
        from ..engines import unavailable

        return unavailable(engine) if engine else None

    def planned(self):
        if self.protocol == "http":
            return http_plan(self.services, self.engines, self.connections, self.apps, self.baselines,
                             self.servers, self.skip_peers, self._pythons())
        return plan(self.services, self.engines, self.connections, self.baselines, self.servers, self._pythons())

    def cells(self):
        """The cells that run: the plan less :meth:`skipped`'s."""
        return [c for c in self.planned() if self.reason_unavailable(c) is None]

    def skipped(self) -> list[dict]:
        """The cells left out because their server cannot run under their interpreter, each
        ``{service, engine, connections, python, reason}`` (e.g. gevent on a free-threaded build)."""
        return [{"service": c.service, "engine": c.engine, "connections": c.connections, "python": c.python,
                 "reason": reason} for c in self.planned() if (reason := self.reason_unavailable(c))]

    def steps(self) -> int:
        """Units of work for a progress bar: every run, plus one per idle check."""
        return len(self.cells()) * self.repeat + (len(self.engines) if self.idle_connections else 0)


def run_compare(options: Options, *, on_step: Callable[[str, dict], None] | None = None,
                runner=run_cell) -> dict:
    """Run everything, write ``options.out``/{results.json, report.md, *.png}; return the results.

    ``on_step(description, row)`` is called after each run and each idle check.
    """
    described = machine.describe()
    open_files = idle.raise_open_file_limit() if options.idle_connections else None

    def on_run(cell, repeat, row):
        if on_step is not None:
            on_step(f"{cell.service} {cell.engine} c={cell.connections} #{repeat + 1}", row)

    runs = run_matrix(options.cells(), options.load, options.repeat, on_run, runner=runner)
    cells = aggregate(runs)
    if options.protocol == "http":
        analysis.add_ratios(cells, peers.HTTP_CLOSEST, peers.HTTP_FASTEST)
    else:
        analysis.add_ratios(cells)
    described["interpreters"] = pythons.interpreters(options, cells)
    idle_rows = []
    for engine in options.engines if options.idle_connections else ():
        row = idle.idle_check(engine, options.idle_connections)
        idle_rows.append(row)
        if on_step is not None:
            on_step(f"idle {engine} x{options.idle_connections}", row)
    # Other work on a shared machine shows as load beyond ours: the report prints both ends.
    described["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results = {
        "machine": described,
        "settings": {
            "command": options.command, "engines": options.engines, "services": options.services,
            "connections": options.connections, "duration": options.load.duration,
            "warmup": options.load.warmup, "load_processes": options.load.processes,
            "repeat": options.repeat, "baselines": options.baselines,
            "idle_connections": options.idle_connections,
            "servers": [list(pair) for pair in options.servers], "backlog": options.load.backlog,
            "expect": {svc: expect_for(svc, options.load.expect) for svc in options.services}
            if options.protocol == "line" else {c["service"]: c["expect"] for c in cells},
            "protocol": options.protocol, "apps": [list(pair) for pair in options.apps],
            "peers_missing": list(options.skip_peers),
            "fastest_baseline": peers.HTTP_FASTEST if options.protocol == "http" else None,
            "pythons": [list(pair) for pair in options.pythons],
        },
        "verdicts": [dict(v, python=name) if name else v for name, sub in pythons.by_python(cells).items()
                     for v in analysis.verdicts(sub)],
        "side_by_side": pythons.side_by_side(cells),
        "skipped": options.skipped(),
        "cells": cells,
        "idle": idle_rows,
        "open_files": open_files,
    }
    write_outputs(results, Path(options.out))
    return results


def write_outputs(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    from .plots import plot_service

    plots = {}  # (python, service) -> image names relative to ``out``
    for name, cells in pythons.by_python(results["cells"]).items():
        where = out / name if name else out  # each interpreter's figures in its own folder
        where.mkdir(parents=True, exist_ok=True)
        for svc in analysis.services(cells):
            plots[name, svc] = [f"{name}/{f}" if name else f for f in plot_service(cells, svc, where)]
    (out / "report.md").write_text(report.render(results, plots))
