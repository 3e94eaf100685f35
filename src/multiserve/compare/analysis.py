"""Reading the aggregated cells: ratios to baselines, winners, and the verdict in plain words.

Everything here is a pure function of results.json's ``cells``, so the terminal table, report.md
and any other tool draw the same conclusions from the same numbers.
"""
from __future__ import annotations

from .baselines import CLOSEST_BASELINE, FASTEST_BASELINE

# Plain-language names of the built-in workloads, for verdicts.
KINDS = {"upper": "cheap, non-blocking", "echo": "cheap, non-blocking", "sleep": "IO-bound",
         "cpu": "CPU-bound", "tickets": "database-bound"}


def ok(cell: dict) -> bool:
    return cell["status"] == "ok" and cell["rps"] is not None


def _index(cells):
    return {(c["service"], c["engine"], c["connections"]): c for c in cells}


def add_ratios(cells: list[dict]) -> None:
    """Give every engine cell ``vs_baseline`` (its req/s over its closest baseline's, same service
    and connections; None if either failed or is missing), ``baseline_name`` and
    ``vs_fastest`` (over uvloop-protocol's). Baseline cells get None."""
    index = _index(cells)
    for cell in cells:
        cell["baseline_name"] = cell["vs_baseline"] = cell["vs_fastest"] = None
        if cell["baseline"]:
            continue
        name = CLOSEST_BASELINE.get(cell["engine"])
        cell["baseline_name"] = name
        for field, other in (("vs_baseline", name), ("vs_fastest", FASTEST_BASELINE)):
            base = index.get((cell["service"], other, cell["connections"]))
            if ok(cell) and base is not None and ok(base) and base["rps"]:
                cell[field] = cell["rps"] / base["rps"]


def services(cells) -> list[str]:
    return list(dict.fromkeys(c["service"] for c in cells))


def connection_counts(cells, service) -> list[int]:
    return sorted({c["connections"] for c in cells if c["service"] == service})


def ranking(cells, service, connections, *, engines_only=True) -> list[dict]:
    """The successful cells of one column, fastest first."""
    group = [c for c in cells if c["service"] == service and c["connections"] == connections and ok(c)
             and not (engines_only and c["baseline"])]
    return sorted(group, key=lambda c: c["rps"], reverse=True)


def winner(cells, service, connections) -> dict | None:
    """The engine (never a baseline) serving most requests/s in that column."""
    ranked = ranking(cells, service, connections)
    return ranked[0] if ranked else None


def describe_service(service: str) -> str:
    name, _, arg = service.partition(":")
    kind = KINDS.get(name)
    if kind and arg:
        kind += f", {arg} ms a request"
    return f"{service} ({kind})" if kind else service


def verdict(cells, service, cores) -> str:
    """One or two sentences: who wins where, by how much over the runner-up, on how many cores."""
    parts = []
    runs: list[tuple[str, list[int], float | None, str | None]] = []  # winner, counts, ratio, runner-up
    for c in connection_counts(cells, service):
        ranked = ranking(cells, service, c)
        if not ranked:
            continue
        best = ranked[0]
        second = ranked[1] if len(ranked) > 1 else None
        ratio = best["rps"] / second["rps"] if second and second["rps"] else None
        if runs and runs[-1][0] == best["engine"]:
            runs[-1][1].append(c)
            runs[-1] = (best["engine"], runs[-1][1], ratio, second["engine"] if second else None)
        else:
            runs.append((best["engine"], [c], ratio, second["engine"] if second else None))
    if not runs:
        return f"{describe_service(service)}: no engine completed a run."
    for engine, counts, ratio, second in runs:
        where = "/".join(str(c) for c in counts)
        by = f" by {ratio:.1f}x over {second} (at {counts[-1]})" if ratio else ""
        parts.append(f"{engine} wins at {where} connection{'s' if counts != [1] else ''}{by}")
    return f"{describe_service(service)}: " + "; ".join(parts) + f", on {cores} cores."


def below_baseline(cells, service) -> list[dict]:
    """Engine cells slower than their closest baseline (ratio < 1)."""
    return [c for c in cells if c["service"] == service and not c["baseline"]
            and c.get("vs_baseline") is not None and c["vs_baseline"] < 1.0]


def failed(cells) -> list[dict]:
    return [c for c in cells if c["status"] != "ok"]
