"""``multiserve lab NAME --python gil=PATH --python ft=PATH``: the same experiments under each
interpreter, printed side by side (issue 13).

Each interpreter runs ``PATH -m multiserve lab NAME --json FILE`` in its own process, so its
``machine.gil_enabled`` is its own, read after its imports. Rows line up by position (every
interpreter runs the same experiment code, in the same order); a column whose values agree
everywhere is shown once, the others once per interpreter, and ``seconds`` gets the ratio of
the first interpreter's time to each other's (above 1: faster than the first).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile

from .cli import LEFT, VERDICT_STYLE, _cell

# A whole `lab all` at its default sizes takes minutes on a busy machine; a run past this is hung.
RUN_TIMEOUT_S = 3600


def run_each(pythons: list[tuple[str, str]], lab_args: list[str], console) -> dict[str, list[dict]] | str:
    """{name: [report JSON, ...]} for each interpreter, or a one-line error."""
    out = {}
    for name, path in pythons:
        with tempfile.TemporaryDirectory(prefix="multiserve-lab-") as tmp:
            target = os.path.join(tmp, "lab.json")
            console.print(f"lab under {name} ({path}) ...", markup=False, highlight=False)
            try:
                proc = subprocess.run([path, "-m", "multiserve", "lab", *lab_args, "--json", target],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True, timeout=RUN_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"--python {name}: {exc}"
            if proc.returncode != 0 or not os.path.exists(target):
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                return f"--python {name}: the lab failed (exit {proc.returncode}): {last}"
            for line in proc.stderr.splitlines():  # e.g. the warning that the GIL came back on
                if "GIL" in line:
                    console.print(f"{name}: {line}", markup=False, highlight=False)
            with open(target) as f:
                data = json.load(f)
        out[name] = data if isinstance(data, list) else [data]
    return out


def columns(reports: list[dict], shown: list[str]) -> tuple[list[str], list[str]]:
    """(shared, per_interpreter): the shown columns whose values agree in every row of every
    report, and the rest."""
    shared, varying = [], []
    for column in shown:
        same = column in LEFT or all(
            len({json.dumps(r["results"][i].get(column) if i < len(r["results"]) else None) for r in reports}) == 1
            for i in range(max(len(r["results"]) for r in reports)))
        (shared if same else varying).append(column)
    return shared, varying


def table(experiment: str, by_python: dict[str, dict], shown: list[str]):
    """The rich table of one experiment across interpreters."""
    from rich.table import Table

    names = list(by_python)
    reports = [by_python[n] for n in names]
    shared, varying = columns(reports, shown)
    out = Table(title=f"lab {experiment}: " + ", ".join(
        f"{n} = Python {r['machine']['python']}{'t' if r['machine'].get('free_threaded') else ''} "
        f"GIL {'on' if r['machine']['gil_enabled'] else 'off'}" for n, r in by_python.items()), title_justify="left")
    for column in shared:
        out.add_column(column, justify="left" if column in LEFT else "right")
    for column in varying:
        for n in names:
            out.add_column(f"{column} {n}", justify="right")
        if column == "seconds":
            for n in names[1:]:
                out.add_column(f"{names[0]}/{n}", justify="right")
    for i in range(max(len(r["results"]) for r in reports)):
        rows = [r["results"][i] if i < len(r["results"]) else {} for r in reports]
        cells = [_cell(rows[0].get(c)) for c in shared]
        for column in varying:
            cells += [_cell(row.get(column)) for row in rows]
            if column == "seconds":
                first = rows[0].get("seconds")
                cells += [f"{first / row['seconds']:.2f}x" if first and row.get("seconds") else "-" for row in rows[1:]]
        out.add_row(*cells)
    return out


def show(results: dict[str, list[dict]], shown_columns: dict[str, list[str]], console) -> None:
    """Print every experiment's table, then each interpreter's verdict and reasons."""
    names = list(results)
    for k, first in enumerate(results[names[0]]):
        experiment = first["experiment"]
        by_python = {n: results[n][k] for n in names if k < len(results[n])}
        console.print(table(experiment, by_python, shown_columns.get(experiment) or list(first["results"][0])))
        console.print(f"claim:   {first['claim']}", markup=False, highlight=False)
        for n, report in by_python.items():
            console.print(f"{n}: [{VERDICT_STYLE[report['verdict']]}]{report['verdict']}[/]")
            console.print(f"  why: {report['why']}", markup=False, highlight=False)
        console.print()
