"""``compare --python NAME=PATH``: the same servers under several interpreters, side by side (issue 13).

Every engine and baseline runs under each interpreter; the load generator stays in the process
running compare (one instrument for all sides). Each cell records ``python`` (the NAME) and
``gil_enabled`` (from the server's ready line, after its imports). The side-by-side rows pair a
server's cells across interpreters: the first ``--python`` is the reference, and every other
gets its req/s ratio to it, named *faster* or *slower* only when the two 95% intervals do not
overlap (the rule of :mod:`.stats`, as for the verdicts), else a *tie*.
"""
from __future__ import annotations

from . import stats


def by_python(cells: list[dict]) -> dict[str, list[dict]]:
    """The cells of each interpreter, in first-seen order (one entry, ``""``, without --python).
    A ``--server``'s cells (the user's command, no interpreter of ours) go with the first."""
    names = list(dict.fromkeys(c.get("python", "") for c in cells if c.get("kind") != "server")) or [""]
    out = {name: [] for name in names}
    for c in cells:
        out[c.get("python", "") if c.get("kind") != "server" else names[0]].append(c)
    return out


def interpreters(options, cells: list[dict]) -> list[dict]:
    """results.json's ``machine.interpreters``: per --python (or this interpreter alone) its name,
    path, version, build, and the GIL's state the servers reported while serving."""
    from .. import interpreter

    rows = []
    for name, path in options.pythons or [("", "")]:
        info = dict(options.interpreters.get(name, {}).get("interpreter") or interpreter.describe())
        seen = {c.get("gil_enabled") for c in cells if c.get("python", "") == name and c.get("kind") != "server"
                and c["status"] == "ok"}
        seen.discard(None)
        info.pop("gil_enabled", None)  # the process that answered the query; serving is what counts
        rows.append({"name": name, **info, "executable": path or info.get("executable"),
                     "gil_enabled_serving": seen.pop() if len(seen) == 1 else (None if not seen else "mixed")})
    return rows


def side_by_side(cells: list[dict]) -> list[dict]:
    """One row per (service, server, connections) with a cell under more than one interpreter:
    ``{service, engine, baseline, connections, by_python: {name: {rps, rps_ci, gil_enabled,
    cpu_us_per_request, status}}, ratios: {name: {ratio, verdict}}}``; empty without --python."""
    groups = by_python(cells)
    names = list(groups)
    if len(names) < 2:
        return []
    index = {(c["service"], c["engine"], c["connections"], c.get("python", "")): c for c in cells}
    keys = list(dict.fromkeys((c["service"], c["engine"], c["connections"]) for c in cells
                              if c.get("kind") != "server"))
    rows = []
    for service, engine, connections in keys:
        found = {n: index.get((service, engine, connections, n)) for n in names}
        present = {n: c for n, c in found.items() if c is not None}
        first = next(iter(present.values()))
        row = {"service": service, "engine": engine, "baseline": first["baseline"], "connections": connections,
               "by_python": {n: {"rps": c["rps"], "rps_ci": c.get("rps_ci"), "gil_enabled": c.get("gil_enabled"),
                                 "cpu_us_per_request": c.get("cpu_us_per_request"), "p99_us": c.get("p99_us"),
                                 "client_bound": c.get("client_bound", False), "status": c["status"]}
                             for n, c in present.items()},
               "ratios": {}}
        reference = found[names[0]]
        for n in names[1:]:
            row["ratios"][n] = compare_two(reference, found[n])
        rows.append(row)
    return rows


def compare_two(reference: dict | None, other: dict | None) -> dict:
    """``{ratio, verdict}``: other's req/s over the reference's; verdict ``faster``/``slower``
    when the 95% intervals separate, ``tie`` when they overlap, ``no interval`` with one run,
    ``missing`` when either did not run or failed (then ``ratio`` is None)."""
    ok = [c is not None and c["status"] == "ok" and c["rps"] for c in (reference, other)]
    if not all(ok):
        return {"ratio": None, "verdict": "missing"}
    ratio = other["rps"] / reference["rps"]
    if reference.get("rps_ci") is None or other.get("rps_ci") is None:
        return {"ratio": ratio, "verdict": "no interval"}
    if stats.overlaps(reference["rps_ci"], other["rps_ci"]):
        return {"ratio": ratio, "verdict": "tie"}
    return {"ratio": ratio, "verdict": "faster" if ratio > 1 else "slower"}


def gil_word(state) -> str:
    return {True: "on", False: "off", None: "?", "mixed": "mixed"}.get(state, str(state))


def markdown(results: dict) -> list[str]:
    """The report's side-by-side section (empty without --python)."""
    rows = results.get("side_by_side") or []
    if not rows:
        return []
    from .report import fmt_ci, fmt_int

    names = [i["name"] for i in results["machine"].get("interpreters", [])]
    ref = names[0]
    head = ["service", "connections", "server"]
    for n in names:
        head += [f"{n} req/s", f"{n} 95% interval", f"{n} GIL", f"{n} CPU µs/req"]
    for n in names[1:]:
        head += [f"{n}/{ref}", "verdict"]
    out = ["## Side by side: interpreters", "",
           f"Each server under each interpreter, the same load generator for all; *{'/'.join(names[1:])}/{ref}* "
           f"is req/s over {ref}'s, *faster*/*slower* only when the 95% intervals separate, else a tie. "
           "*GIL* is what each server reported while serving (its ready line, after its imports).", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cols = [f"`{r['service']}`", str(r["connections"]), r["engine"] + (" (baseline)" if r["baseline"] else "")]
        for n in names:
            c = r["by_python"].get(n)
            if c is None:
                cols += ["skipped", "–", "–", "–"]
            elif c["status"] != "ok":
                cols += ["failed", "–", gil_word(c["gil_enabled"]), "–"]
            else:
                cols += [fmt_int(c["rps"]) + (" (client-bound)" if c["client_bound"] else ""), fmt_ci(c["rps_ci"]),
                         gil_word(c["gil_enabled"]), fmt_int(c["cpu_us_per_request"])]
        for n in names[1:]:
            v = r["ratios"][n]
            cols += ["–" if v["ratio"] is None else f"{v['ratio']:.2f}x", v["verdict"]]
        out.append("| " + " | ".join(cols) + " |")
    return out + [""]


def rich_table(results: dict):
    """The same rows for the terminal (None without --python)."""
    rows = results.get("side_by_side") or []
    if not rows:
        return None
    from rich.table import Table

    from .report import fmt_int

    names = [i["name"] for i in results["machine"].get("interpreters", [])]
    table = Table(title="interpreters side by side (req/s, GIL while serving)", title_justify="left")
    for column in ("service", "c", "server", *[f"{n}" for n in names], *[f"{n}/{names[0]}" for n in names[1:]]):
        table.add_column(column, justify="left" if column in ("service", "server") else "right")
    for r in rows:
        cells = [r["service"], str(r["connections"]), r["engine"] + (" (baseline)" if r["baseline"] else "")]
        for n in names:
            c = r["by_python"].get(n)
            cells.append("skipped" if c is None else "failed" if c["status"] != "ok"
                         else f"{fmt_int(c['rps'])} GIL {gil_word(c['gil_enabled'])}")
        for n in names[1:]:
            v = r["ratios"][n]
            cells.append("–" if v["ratio"] is None else f"{v['ratio']:.2f}x {v['verdict']}")
        table.add_row(*cells)
    return table
