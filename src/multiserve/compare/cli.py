"""``multiserve compare``: every engine under the same load, beside the baselines, as a report.

Validates the names first (bad input: one line, exit 2), shows a progress bar over the matrix,
prints one table per service, and writes DIR/results.json, DIR/report.md and DIR/*.png.
Names (services, servers) are printed literally: rich's markup and emoji codes are off for them.
Exit 0 when the report was written, even if cells failed: a failed cell is a result.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from ..config import positive_int, seconds
from ..engines import ENGINES
from ..interpreter import query
from ..services import load_service
from . import analysis, report
from . import peers
from .baselines import BASELINES
from .matrix import LoadSettings
from .runner import Options, run_compare

log = logging.getLogger("multiserve")

DEFAULT_SERVICES = "upper,sleep:10,cpu:1"
DEFAULT_CONNECTIONS = "1,16,256"
# Three runs: the fewest that give a t-interval a claim can clear (two: t = 12.7).
DEFAULT_REPEAT = 3


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"connection counts must be >= 1, got {text!r}")
    return values


def _name_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _server(text: str) -> tuple[str, str]:
    name, sep, command = text.partition("=")
    name, command = name.strip(), command.strip()
    if not sep or not name or not command:
        raise argparse.ArgumentTypeError(f"expected NAME=COMMAND, got {text!r}")
    try:
        shlex.split(command)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--server {name}: cannot split its command: {exc}") from None
    return name, command


def _python(text: str) -> tuple[str, str]:
    from ..interpreter import python_option

    try:
        return python_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engines", default="all", help="engines separated by commas, 'all' "
                        f"({', '.join(ENGINES)}) or 'none' (only --servers and baselines)")
    parser.add_argument("--server", dest="servers", type=_server, action="append", default=[],
                        metavar="NAME=COMMAND",
                        help="also measure your own server (repeatable): COMMAND serves the line protocol "
                             "(--protocol http: HTTP, {app} becomes the app); "
                             "{port} in it becomes a free port (ready when the port accepts, or when it prints "
                             "multiserve's ready line), {service} the service spec, {backlog} the backlog")
    parser.add_argument("--protocol", choices=("line", "http"), default="line",
                        help="line (the services) or http (a web app under every engine beside gunicorn, "
                             "uvicorn and granian: pip install 'multiserve[peers]')")
    parser.add_argument("--app", dest="apps", action="append", default=[], metavar="MODULE:NAME",
                        help="--protocol http: the app to serve (repeatable: a WSGI and an ASGI one; the "
                             "interface is picked per app); default: the demo app examples/demo_app.py, "
                             "WSGI and ASGI")
    parser.add_argument("--services", type=_name_list, default=None,
                        help=f"service specs separated by commas (default {DEFAULT_SERVICES}); with --protocol "
                             f"http, workloads: hello, sleep:MS, cpu:MS, tickets (the demo app's /hello, "
                             f"/sleep/MS, /cpu/MS, /tickets) or /PATHs (default {peers.DEFAULT_WORKLOADS})")
    parser.add_argument("--connections", type=_int_list, default=_int_list(DEFAULT_CONNECTIONS),
                        help=f"connection counts (default {DEFAULT_CONNECTIONS})")
    parser.add_argument("--duration", type=seconds, default=LoadSettings.duration, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=LoadSettings.warmup, help="warm-up seconds per run (0: none)")
    parser.add_argument("--repeat", type=positive_int, default=DEFAULT_REPEAT,
                        help=f"runs per cell, interleaved (default {DEFAULT_REPEAT}); the mean and its 95%% interval "
                             "are reported, and fewer than 2 runs give no interval and so no verdict")
    parser.add_argument("--backlog", type=positive_int, default=LoadSettings.backlog,
                        help=f"listen backlog given to every server of the run (default {LoadSettings.backlog})")
    parser.add_argument("--expect", choices=("auto", "upper", "echo", "any"), default="auto",
                        help="how replies are checked: auto (what the service says: upper, echo; "
                             "'any', unchecked, for a service that declares nothing), or one for all")
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the stdlib, gevent and uvloop baselines")
    parser.add_argument("--idle-connections", type=int, default=0, metavar="N",
                        help="also hold N idle connections on each engine (the C10K check)")
    parser.add_argument("--load-processes", type=positive_int, default=LoadSettings.processes,
                        help=f"load-generator processes (default {LoadSettings.processes}: the other core is the server's)")
    parser.add_argument("--python", dest="pythons", type=_python, action="append", default=[], metavar="NAME=PATH",
                        help="run every engine and baseline under this interpreter (repeatable; multiserve installed "
                             "there), the same load generator for all: a column per interpreter and their ratio, "
                             "e.g. --python gil=.venv/bin/python --python ft=.venv-ft/bin/python")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output directory (default ./report)")


def options_from(args) -> Options:
    """Options from parsed arguments; ValueError with one line for an unknown engine or service."""
    engines = {"all": list(ENGINES), "none": []}.get(args.engines)
    if engines is None:
        engines = _name_list(args.engines)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or (not engines and args.engines != "none"):
        raise ValueError(f"unknown engine(s) {', '.join(unknown) or '(none given)'}: use 'all', 'none' or some of "
                         f"{', '.join(ENGINES)}")
    names = [name for name, _ in args.servers]
    taken = [n for n in names if n in ENGINES or n in BASELINES or n in peers.PEERS or names.count(n) > 1]
    if taken:
        raise ValueError(f"--server name {taken[0]!r} is taken (an engine, a baseline or another --server): "
                         "give each server its own name")
    py_names = [name for name, _ in args.pythons]
    if len(set(py_names)) < len(py_names):
        raise ValueError(f"--python names must differ, got {', '.join(py_names)}")
    interpreters = {}
    for name, path in args.pythons:  # each says what it is and which engines it can run
        try:
            interpreters[name] = query(path)
        except RuntimeError as exc:
            raise ValueError(f"--python {name}: {exc}") from None
    if not engines and not args.servers and not args.baselines:
        raise ValueError("nothing to measure: --engines none with no --server and --no-baselines")
    http = args.protocol == "http"
    if args.services is None:
        args.services = _name_list(peers.DEFAULT_WORKLOADS if http else DEFAULT_SERVICES)
    apps, skip = [], []
    if http:
        for spec in args.services:
            peers.workload_path(spec)  # raises ValueError with the reason
        apps = _apps(args.apps)
        if args.idle_connections:
            raise ValueError("--idle-connections holds line-protocol connections: not with --protocol http")
        if args.expect != "auto":
            raise ValueError("--expect checks line replies: with --protocol http every status is checked, "
                             "and the demo app's bodies")
        if args.baselines:
            missing = peers.missing_peers()
            for name, package in missing.items():
                log.info("peer %s skipped: %s is not installed (pip install 'multiserve[peers]')", name, package)
            skip = list(missing)
    else:
        if args.apps:
            raise ValueError("--app serves HTTP: add --protocol http")
        for spec in args.services:
            load_service(spec)  # raises ValueError with the reason
    if args.warmup < 0 or args.idle_connections < 0:
        raise ValueError("--warmup and --idle-connections must be >= 0")
    return Options(engines=engines, services=args.services, connections=args.connections,
                   load=LoadSettings(args.duration, args.warmup, args.load_processes, args.backlog, args.expect),
                   repeat=args.repeat, servers=list(args.servers),
                   baselines=args.baselines, idle_connections=args.idle_connections, out=args.out,
                   protocol=args.protocol, apps=apps, skip_peers=skip,
                   pythons=list(args.pythons), interpreters=interpreters,
                   command="multiserve compare " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["compare"] else []))


def _apps(specs: list[str]) -> list[tuple[str, str]]:
    """(spec, interface) per --app (default: the demo app, WSGI and ASGI); ValueError (one line)
    for an app that cannot be loaded or two apps of the same interface."""
    import os

    from ..apps import is_coroutine_app, load_app

    if not specs:
        root = peers.project_root()
        if root is None:
            raise ValueError("the demo app examples/demo_app.py is not here: run from the project's directory "
                             "or give --app MODULE:NAME")
        return [(peers.DEMO_APPS[0], "wsgi"), (peers.DEMO_APPS[1], "asgi")]
    if os.getcwd() not in sys.path:  # as the servers import it: from the current directory
        sys.path.insert(0, os.getcwd())
    apps = [(spec, "asgi" if is_coroutine_app(load_app(spec)) else "wsgi") for spec in specs]
    interfaces = [interface for _, interface in apps]
    if len(set(interfaces)) < len(interfaces):
        raise ValueError("give at most one WSGI and one ASGI --app: cells are named ENGINE/INTERFACE")
    return apps


def summary_tables(results):
    """One rich table per service (and interpreter, with --python): servers down, connection
    counts across, req/s and ratio; then the interpreters side by side."""
    from . import pythons

    groups = pythons.by_python(results["cells"])
    tables = []
    for name, cells in groups.items():
        tables += _service_tables(results, cells, f" [under {name}]" if len(groups) > 1 else "")
    if (side := pythons.rich_table(results)) is not None:
        tables.append(side)
    return tables


def _service_tables(results, cells, under: str):
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    tables = []
    for svc in analysis.services(cells):
        counts = analysis.connection_counts(cells, svc)
        table = Table(title=Text(analysis.verdict(cells, svc, results["machine"]["cores"]) + under), title_justify="left")
        table.add_column("server")
        for c in counts:
            table.add_column(f"c={c} req/s", justify="right")
            table.add_column("p99 µs", justify="right")
        servers = list(dict.fromkeys((x["engine"], x["baseline"]) for x in cells if x["service"] == svc))
        index = {(x["engine"], x["connections"]): x for x in cells if x["service"] == svc}
        winners = {c: analysis.winner(cells, svc, c) for c in counts}
        for engine, is_baseline in servers:
            row = [f"[dim]{escape(engine)} (baseline)[/dim]" if is_baseline else escape(engine)]
            for c in counts:
                x = index.get((engine, c))
                if x is None:
                    row += ["", ""]
                elif not analysis.ok(x):
                    row += ["[red]failed[/red]", ""]
                else:
                    text = report.fmt_int(x["rps"])
                    if x.get("rps_ci") is not None:
                        text += f" ±{(x['rps_ci'][1] - x['rps_ci'][0]) / 2:,.0f}"
                    if x.get("client_bound"):
                        text += " (client-bound)"
                    if x.get("vs_baseline") is not None:
                        text += f" ({x['vs_baseline']:.2f}x)"
                    if winners[c] is x:
                        text = f"[bold green]{text} {report.WINNER}[/bold green]"
                    row += [text, report.fmt_int(x["p99_us"])]
            table.add_row(*row)
        tables.append(table)
    return tables


def run(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s multiserve compare: %(message)s")
    try:
        options = options_from(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    console = Console(emoji=False)  # a spec such as "examples.notes:Notes:" is not an emoji
    failures = []
    with Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("compare", total=options.steps())

        def on_step(what, row):
            if row["status"] != "ok":
                failures.append(f"{what}: {row['reason']}")
                progress.console.print(f"[red]failed[/red] {escape(what)}: {escape(row['reason'])}")
            progress.update(task, advance=1, description=escape(what))

        try:
            results = run_compare(options, on_step=on_step)
        except OSError as exc:
            log.error("cannot write the report to %s: %s", options.out, exc)
            return 2
    for table in summary_tables(results):
        console.print(table)
    from .pythons import gil_word

    for row in results["machine"].get("interpreters", []):
        console.print(f"{row['name'] or 'servers'}: {row.get('implementation')} {row.get('version')} "
                      f"({row['executable']}), GIL {gil_word(row['gil_enabled_serving'])} while serving",
                      markup=False, highlight=False)
    for x in results.get("skipped", []):
        console.print(f"skipped {x['service']} {x['engine']} c={x['connections']}"
                      + (f" under {x['python']}" if x["python"] else "") + f": {x['reason']}", markup=False, highlight=False)
    console.print(f"{len(failures)} failed run(s). Report: {options.out / 'report.md'} "
                  f"(results.json and plots beside it)", markup=False, highlight=False)
    return 0
