"""The matrix: every service x server x connection count, each cell a fresh server under load.

One *run* of a cell: start the server, wait until it serves, then one load run on primed
connections (each answered once before the clock starts, as the C reference client does), a
warm-up on those same connections, then the measured window, while its process tree is sampled;
then SIGTERM and exit 0 expected (a user's ``--server``: its exit code is recorded, not judged).
``--repeat R`` runs the whole matrix R times in turn (A B C, A B C: interleaved, so a slow minute
of a shared machine spreads over all cells instead of sinking one), and :func:`aggregate` folds
the runs of a cell into its mean, 95% interval (:mod:`.stats`), medians and spread.

A run that fails (not ready, load errors or wrong replies, a crash, a bad exit) is recorded
with ``status="failed"`` and a one-line ``reason``; the matrix goes on with the next cell.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Iterable

from .. import launch
from . import stats
from .baselines import BASELINES, serves
from . import peers
from .launcher import (BACKLOG, Server, ServerFailed, TreeSampler, baseline_command, engine_command,
                       http_engine_command, server_command)
from .window import WindowCPU

MESSAGE = b"hello world"  # the request the C reference client sends too


# What a reply must be, per built-in service (its name before the ':'): what its handle returns.
# Any other service is checked against its own ``expect`` attribute if it has one, else not at
# all (``any``), and the report says so.
SERVICE_EXPECT = {"upper": "upper", "echo": "echo", "sleep": "upper", "cpu": "upper"}
# A load-generator process above this share of its core was the limit, not the server (its
# event loop never waited for a reply): such a cell is marked client_bound and never wins.
CLIENT_BOUND_SHARE = 0.90

ENGINE, BASELINE, SERVER = "engine", "baseline", "server"


def expect_for(service: str, override: str = "auto") -> str:
    """How replies to ``service`` are checked: ``upper``, ``echo`` or ``any`` (not checked)."""
    if override != "auto":
        return override
    name = service.partition(":")[0]
    if name in SERVICE_EXPECT:
        return SERVICE_EXPECT[name]
    from ..services import load_service

    try:
        declared = getattr(load_service(service), "expect", None)
    except ValueError:
        return "any"
    return declared if declared in ("upper", "echo", "any") else "any"


@dataclasses.dataclass(frozen=True)
class Cell:
    service: str
    engine: str  # the server's name: an engine, a baseline, or a --server NAME
    baseline: bool
    connections: int
    kind: str = ENGINE  # ENGINE, BASELINE or SERVER
    template: str = ""  # SERVER only: the user's COMMAND ({port}, {service}, {backlog}, {app})
    protocol: str = "line"  # "http": ``service`` is a workload (a path), ``engine`` ENGINE/INTERFACE
    app: str = ""  # HTTP: the app served, module:name
    python: str = ""  # compare --python NAME=PATH: NAME ("" without --python: this interpreter)
    interpreter: str = ""  # ... and PATH, which runs engines and baselines ("": sys.executable)

    def launch(self, backlog: int = BACKLOG) -> tuple[list[str], int | None]:
        """The argv to start, and the port to wait for (None: wait for the ready line)."""
        if self.kind == SERVER:
            port = launch.free_port() if "{port}" in self.template else None
            return server_command(self.template, self.service, port or 0, backlog, app=self.app), port
        if self.protocol == "http":
            return self._launch_http(backlog)
        if self.baseline:
            return baseline_command(self.engine, self.service, backlog, python=self.interpreter), None
        return engine_command(self.engine, self.service, backlog=backlog, python=self.interpreter), None

    def _launch_http(self, backlog: int) -> tuple[list[str], int | None]:
        if self.baseline:  # a peer: its own CLI, ready when its port accepts
            port = launch.free_port()
            return peers.PEERS[self.engine].command(self.app, port, backlog, self.connections, self.interpreter), port
        engine, _, interface = self.engine.partition("/")
        return http_engine_command(engine, self.app, interface, backlog, python=self.interpreter), None

    def load_request(self):
        """HTTP: the request every connection sends, and the body it must get back (the demo
        app's known reply; any other app: the status only)."""
        from ..loadgen.http import HttpRequest

        return HttpRequest(path=peers.workload_path(self.service),
                           expect_body=peers.expected_body(self.service, self.app in peers.DEMO_APPS))

    @property
    def key(self) -> tuple:
        return (self.service, self.engine, self.connections, self.python)


@dataclasses.dataclass(frozen=True)
class LoadSettings:
    duration: float = 1.0
    warmup: float = 0.2
    # Load-generator processes. One: it drives 100k+ req/s alone here, and a second one takes the
    # server's core (asyncio, 16 connections: 109k req/s with 1 load process, 90k with 2; measured
    # 2026-11-26 on the 2-core reference machine), as the C reference figures keep client and
    # server on a core each. None: the library's default, one per core.
    processes: int | None = 1
    backlog: int = BACKLOG  # given to every server of the run
    expect: str = "auto"  # "auto": per service (expect_for), else upper/echo/any for all


def plan(services: Iterable[str], engines: Iterable[str], connections: Iterable[int],
         baselines: bool = True, servers: Iterable[tuple[str, str]] = (),
         pythons: Iterable[tuple[str, str]] = (("", ""),)) -> list[Cell]:
    """The cells in run order: per service, engines, then ``servers`` (NAME, COMMAND), then
    baselines, each at every connection count and, for engines and baselines, under each of
    ``pythons`` (NAME, PATH) in turn, so the same server under two interpreters runs back to
    back. A ``--server`` is the user's command: it runs once, whatever the interpreters.

    A baseline that cannot serve a service at all (uvloop-protocol and a blocking service) is
    left out, not failed: it is not part of that comparison.
    """
    servers, pythons = list(servers), list(pythons)
    cells = []
    for service in services:
        for name in engines:
            cells += [Cell(service, name, False, c, python=p, interpreter=path)
                      for c in connections for p, path in pythons]
        for name, template in servers:
            cells += [Cell(service, name, False, c, SERVER, template) for c in connections]
        for name in BASELINES if baselines else ():
            if serves(name, service):
                cells += [Cell(service, name, True, c, BASELINE, python=p, interpreter=path)
                          for c in connections for p, path in pythons]
    return cells


def http_plan(workloads: Iterable[str], engines: Iterable[str], connections: Iterable[int],
              apps: Iterable[tuple[str, str]], baselines: bool = True, servers: Iterable[tuple[str, str]] = (),
              skip: Iterable[str] = (), pythons: Iterable[tuple[str, str]] = (("", ""),)) -> list[Cell]:
    """``compare --protocol http``'s cells in run order: per workload, per app ((spec, interface)
    pairs), its engine cells (``threadpool/wsgi``; ASGI on the event-loop engines only), then the
    ``servers`` (NAME, COMMAND: given the first app as ``{app}``), then the peers of that
    interface not in ``skip`` (those not installed), each at every connection count and, for
    engines and peers, under each of ``pythons`` (as :func:`plan`; a peer runs as
    ``PATH -m gunicorn`` etc., so it must be installed under that interpreter)."""
    engines, servers, apps, pythons = list(engines), list(servers), list(apps), list(pythons)
    cells = []
    for workload in workloads:
        for app, interface in apps:
            for name in peers.engine_cells(engines, interface):
                cells += [Cell(workload, name, False, c, ENGINE, protocol="http", app=app, python=p, interpreter=path)
                          for c in connections for p, path in pythons]
        for name, template in servers:
            cells += [Cell(workload, name, False, c, SERVER, template, "http", apps[0][0] if apps else "")
                      for c in connections]
        for app, interface in apps if baselines else ():
            for name, peer in peers.PEERS.items():
                if peer.interface == interface and name not in skip:
                    cells += [Cell(workload, name, True, c, BASELINE, protocol="http", app=app, python=p,
                                   interpreter=path) for c in connections for p, path in pythons]
    return cells


def _failed(cell: Cell, reason: str, **numbers) -> dict:
    row = {**dataclasses.asdict(cell), "rps": None, "p50_us": None, "p99_us": None, "p999_us": None,
           "errors": 0, "mismatches": 0, "cpu_s": None, "rss_kib": None, "prime": None, "gil_enabled": None,
           "client_cpu_pct": None, "client_bound": False, "exit_code": None}
    row.update(numbers, status="failed", reason=reason)
    return row


def run_cell(cell: Cell, load: LoadSettings) -> dict:
    """One run of ``cell``: the numbers of results.json (see the module docstring)."""
    from ..loadgen import LoadSpec, run_load

    http = cell.load_request() if cell.protocol == "http" else None
    expect = expect_for(cell.service, load.expect) if http is None else (
        "status" if http.expect_body is None else "status+body")
    env = peers.server_env() if cell.protocol == "http" else None
    try:
        command, port = cell.launch(load.backlog)
        with Server(command, port=port, env=env) as server:
            sampler = TreeSampler(server.pid).start()
            window = WindowCPU(sampler.cpu_reading, load.warmup, load.duration)
            try:
                result = run_load(LoadSpec(host=server.host, port=server.port, connections=cell.connections,
                                           duration=load.duration, warmup=load.warmup, processes=load.processes,
                                           message=MESSAGE, expect="upper" if http else expect, prime=True,
                                           http=http), on_start=window.on_start)
                cpu_s = window.seconds()
            finally:
                sampler.stop()
            exit_code = server.stop(strict=cell.kind == ENGINE or (cell.kind == BASELINE and cell.protocol == "line"))
    except ServerFailed as exc:
        return _failed(cell, str(exc), expect=expect)
    except Exception as exc:  # the load generator gave up (refused, timed out): one line
        return _failed(cell, f"load: {type(exc).__name__}: {exc}", expect=expect)
    errors = sum(result.errors.values())
    latency = result.latency_us
    share = result.client_cpu_share
    row = {
        **dataclasses.asdict(cell),
        "rps": result.rps, "p50_us": latency["p50"], "p99_us": latency["p99"], "p999_us": latency["p999"],
        "errors": errors, "mismatches": result.mismatches, "cpu_s": cpu_s,
        "rss_kib": sampler.peak_rss // 1024,
        "requests": result.requests, "duration_s": result.duration_s, "load_processes": result.processes,
        "cpu_us_per_request": cpu_s * 1e6 / result.requests if result.requests and cpu_s is not None else None,
        "errors_by_kind": dict(result.errors),
        "prime": result.prime, "connect": result.connect,
        "client_cpu_pct": None if share is None else 100.0 * share,
        "client_bound": share is not None and share > CLIENT_BOUND_SHARE,
        "expect": expect, "exit_code": exit_code,
        # what the server's ready line said, after its imports (None: a --server that did not say)
        "python_version": (server.interpreter or {}).get("version"),
        "gil_enabled": (server.interpreter or {}).get("gil_enabled"),
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


MEDIAN_FIELDS = ("p50_us", "p99_us", "p999_us", "cpu_s", "rss_kib", "cpu_us_per_request", "client_cpu_pct")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _prime(ok: list[dict]) -> dict | None:
    primes = [r["prime"] for r in ok if r.get("prime")]
    if not primes:
        return None
    return {"time_s": _median(p["time_s"] for p in primes), "p50_us": _median(p["p50_us"] for p in primes),
            "max_us": max(p["max_us"] for p in primes)}


def aggregate(runs: list[dict]) -> list[dict]:
    """One cell per (service, server, connections), in first-run order.

    ``rps`` is the mean of the successful runs' req/s and ``rps_ci`` its 95% t-interval (None
    with fewer than two); ``rps_median``, ``rps_min``/``rps_max`` and ``spread_pct`` (max-min over
    the mean) show the runs; other numbers are medians. ``prime`` holds the median priming time
    and first-reply p50 and the largest first-reply max. ``client_bound``: the load generator
    was over :data:`CLIENT_BOUND_SHARE` of its core in most runs. ``errors`` and ``mismatches``
    add up over all runs; a cell is ``failed`` if any of its runs failed (the reasons are kept).
    """
    groups: dict[tuple, list[dict]] = {}
    for row in runs:
        groups.setdefault((row["service"], row["engine"], row["connections"], row.get("python", "")), []).append(row)
    cells = []
    for rows in groups.values():
        ok = [r for r in rows if r["status"] == "ok"]
        first = rows[0]
        cell = {k: first.get(k, default) for k, default in
                (("service", None), ("engine", None), ("baseline", False), ("connections", None),
                 ("kind", BASELINE if first.get("baseline") else ENGINE), ("template", ""), ("expect", None),
                 ("python", ""), ("interpreter", ""))}
        rps = [r["rps"] for r in ok]
        cell["rps"] = statistics.fmean(rps) if rps else None
        cell["rps_ci"] = (lambda ci: None if ci is None else [ci[0], ci[1]])(stats.mean_interval(rps))
        cell["rps_median"] = _median(rps)
        for field in MEDIAN_FIELDS:
            cell[field] = _median(r.get(field) for r in ok)
        cell["rps_min"] = min(rps) if rps else None
        cell["rps_max"] = max(rps) if rps else None
        cell["spread_pct"] = 100.0 * (max(rps) - min(rps)) / cell["rps"] if rps and cell["rps"] else None
        cell["prime"] = _prime(ok)
        bound = [r for r in ok if r.get("client_bound")]
        cell["client_bound"] = bool(ok) and len(bound) * 2 > len(ok)
        # the GIL's state the servers reported: one value when every run agrees, else None
        states = {r.get("gil_enabled") for r in ok}
        cell["gil_enabled"] = states.pop() if len(states) == 1 else None
        cell["python_version"] = next((r["python_version"] for r in ok if r.get("python_version")), None)
        cell["exit_codes"] = sorted({r["exit_code"] for r in ok if r.get("exit_code") is not None})
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
