"""``multiserve lab NAME|all [--quick] [--count N] [--size X] [--json FILE] [--plot FILE] [--python NAME=PATH ...]``.

Prints each experiment's table with its claim and verdict (rich), writes the JSON contract with
``--json`` (one object, or a list for ``all``) and a PNG with ``--plot`` (for ``all``: a directory
that receives ``NAME.png`` for each experiment). With ``--python NAME=PATH`` (repeatable) the
experiments run under each interpreter instead and print side by side (:mod:`.side_by_side`);
``--json`` then holds ``{NAME: report or list}``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from . import EXPERIMENTS, experiment
from . import run as run_experiment
from .common import HOLDS, Report

log = logging.getLogger(__name__)

WIDE = 160  # columns when printing to a file
LEFT = ("method", "variant", "note", "cycle", "kind")
VERDICT_STYLE = {HOLDS: "bold green", "does not hold": "bold red", "inconclusive": "bold yellow"}


def add_arguments(parser):
    parser.add_argument("name", choices=[*EXPERIMENTS, "all"], help="experiment to run, or all of them")
    parser.add_argument("--quick", action="store_true", help="small sizes (lab all --quick: under a minute)")
    parser.add_argument("--count", type=_positive_int, help="tasks / threads / units / waiters (see docs/lab.md)")
    parser.add_argument("--size", type=_positive_float, help="work per task (see docs/lab.md)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--plot", metavar="FILE", help="write a PNG (with all: a directory of NAME.png)")
    parser.add_argument("--python", dest="pythons", type=_python, action="append", default=[], metavar="NAME=PATH",
                        help="run the experiments under this interpreter too (repeatable; multiserve installed "
                             "there): each in its own process, printed side by side, e.g. "
                             "--python gil=.venv/bin/python --python ft=.venv-ft/bin/python")


def _python(text):
    from ..interpreter import python_option

    try:
        return python_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    if args.name == "all" and (args.count or args.size):
        log.error("lab all: --count and --size apply to one experiment; use --quick to shrink them all")
        return 2
    if args.pythons:
        return _run_side_by_side(args, names)
    if args.plot and args.name == "all":
        try:
            os.makedirs(args.plot, exist_ok=True)
        except OSError as exc:
            log.error("lab: cannot create plot directory %s: %s", args.plot, exc)
            return 2
    from rich.console import Console

    # Not a terminal (a file, a pipe, docs): wide enough that the tables do not wrap.
    console = Console() if sys.stdout.isatty() else Console(width=WIDE)
    reports = []
    for name in names:
        module = experiment(name)
        sizes = module.SIZES["quick" if args.quick else "default"]
        sizes = dataclasses.replace(sizes, count=args.count or sizes.count, size=args.size or sizes.size)
        report = _run_with_progress(module, sizes, console)
        reports.append(report)
        show(report, console)
        if args.plot:
            path = os.path.join(args.plot, f"{name}.png") if args.name == "all" else args.plot
            try:
                module.plot(report, path)
            except OSError as exc:
                log.error("lab: cannot write plot %s: %s", path, exc)
                return 2
            console.print(f"plot: {path}")
    if args.json:
        data = [r.to_json() for r in reports] if args.name == "all" else reports[0].to_json()
        try:
            with open(args.json, "w") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
        except OSError as exc:
            log.error("lab: cannot write %s: %s", args.json, exc)
            return 2
    return 0


def _run_side_by_side(args, names) -> int:
    from rich.console import Console

    from .side_by_side import run_each, show as show_side_by_side

    if args.plot:
        log.error("lab --python: --plot draws one interpreter's run; run each interpreter's lab for its plots")
        return 2
    taken = [n for n, _ in args.pythons]
    if len(set(taken)) < len(taken):
        log.error("lab --python: give each interpreter its own NAME (got %s)", ", ".join(taken))
        return 2
    console = Console() if sys.stdout.isatty() else Console(width=WIDE)
    lab_args = [args.name] + (["--quick"] if args.quick else []) + (["--count", str(args.count)] if args.count else []) \
        + (["--size", str(args.size)] if args.size else [])
    results = run_each(args.pythons, lab_args, console)
    if isinstance(results, str):
        log.error("lab: %s", results)
        return 2
    show_side_by_side(results, {n: list(getattr(experiment(n), "COLUMNS", ())) for n in names}, console)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump({n: (r if args.name == "all" else r[0]) for n, r in results.items()}, f, indent=2)
                f.write("\n")
        except OSError as exc:
            log.error("lab: cannot write %s: %s", args.json, exc)
            return 2
    return 0


def _run_with_progress(module, sizes, console) -> Report:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(f"[bold]{module.NAME}[/] {{task.description}}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def progress(label, done, total):
            bar.update(task, description=label, completed=done, total=total)

        return run_experiment(module, sizes, progress)


def show(report: Report, console) -> None:
    from rich.table import Table

    table = Table(title=f"lab {report.experiment}", title_justify="left")
    for column in report.columns:
        table.add_column(column, justify="left" if column in LEFT else "right")
    for row in report.results:
        table.add_row(*[_cell(row.get(c)) for c in report.columns])
    console.print(table)
    m = report.machine
    console.print(f"claim:   {report.claim}", markup=False, highlight=False)
    console.print(f"verdict: [{VERDICT_STYLE[report.verdict]}]{report.verdict}[/] here "
                  f"({m['cores']} cores, Python {m['python']}{' free-threaded' if m.get('free_threaded') else ''}, "
                  f"GIL {'on' if m['gil_enabled'] else 'off'})")
    console.print(f"why:     {report.why}", markup=False, highlight=False)
    console.print()


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value))
    return str(value)
