"""Reading the aggregated cells: ratios to baselines, verdicts, and the verdicts in plain words.

Everything here is a pure function of results.json's ``cells``, so the terminal table, report.md
and any other tool draw the same conclusions from the same numbers. Verdicts rank engines and
``--server``s; baselines stay references (ratios). The claim rule is :mod:`.stats`'s.
"""
from __future__ import annotations

from . import stats
from .baselines import CLOSEST_BASELINE, FASTEST_BASELINE

# Plain-language names of the built-in workloads, for verdicts.
KINDS = {"upper": "cheap, non-blocking", "hello": "cheap, non-blocking", "echo": "cheap, non-blocking", "sleep": "IO-bound",
         "cpu": "CPU-bound", "tickets": "database-bound"}


def ok(cell: dict) -> bool:
    return cell["status"] == "ok" and cell["rps"] is not None


def _index(cells):
    return {(c["service"], c["engine"], c["connections"], c.get("python", "")): c for c in cells}


def add_ratios(cells: list[dict], closest: dict = CLOSEST_BASELINE, fastest: str = FASTEST_BASELINE) -> None:
    """Give every engine cell ``vs_baseline`` (its req/s over its ``closest`` baseline's, same
    service and connections, under the same interpreter; None if either failed or is missing),
    ``baseline_name`` and ``vs_fastest`` (over ``fastest``'s: uvloop-protocol for the line
    protocol). Baseline cells get None."""
    index = _index(cells)
    for cell in cells:
        cell["baseline_name"] = cell["vs_baseline"] = cell["vs_fastest"] = None
        if cell["baseline"] or cell.get("kind", "engine") != "engine":
            continue  # baselines are the references; a --server has no closest baseline
        name = closest.get(cell["engine"])
        cell["baseline_name"] = name
        for field, other in (("vs_baseline", name), ("vs_fastest", fastest)):
            base = index.get((cell["service"], other, cell["connections"], cell.get("python", "")))
            if ok(cell) and base is not None and ok(base) and base["rps"]:
                cell[field] = cell["rps"] / base["rps"]


def services(cells) -> list[str]:
    return list(dict.fromkeys(c["service"] for c in cells))


def connection_counts(cells, service) -> list[int]:
    return sorted({c["connections"] for c in cells if c["service"] == service})


def ranking(cells, service, connections, *, engines_only=True) -> list[dict]:
    """The successful cells of one column, fastest first (engines and --servers unless
    ``engines_only`` is false)."""
    group = [c for c in cells if c["service"] == service and c["connections"] == connections and ok(c)
             and not (engines_only and c["baseline"])]
    return sorted(group, key=lambda c: c["rps"], reverse=True)


def column_verdict(cells, service, connections) -> dict:
    """The verdict of one (service, connections) column: ``{service, connections, winner,
    tied_with, ratio, confidence, client_bound}``.

    Candidates are the successful engine and --server cells that were not client-bound. The
    fastest is the ``winner`` only if its 95% interval clears every other candidate's; else
    ``winner`` is None and ``tied_with`` lists every candidate whose interval overlaps the
    best's (the best first). ``ratio``: best over runner-up req/s. ``confidence`` says what the
    claim rests on, in words. ``client_bound`` names the cells left out for that reason.
    """
    ranked = ranking(cells, service, connections)
    bound = [c["engine"] for c in ranked if c.get("client_bound")]
    candidates = [c for c in ranked if not c.get("client_bound")]
    out = {"service": service, "connections": connections, "winner": None, "tied_with": [], "ratio": None,
           "confidence": "", "client_bound": bound}
    if not candidates:
        out["confidence"] = ("every successful cell was client-bound: no claim" if bound
                             else "no engine or --server cell succeeded")
        return out
    best = candidates[0]
    if len(candidates) == 1:
        out["tied_with"] = [best["engine"]]
        out["confidence"] = "the only server ranked here: nothing to compare"
        return out
    runner_up = candidates[1]
    out["ratio"] = best["rps"] / runner_up["rps"] if runner_up["rps"] else None
    if best.get("rps_ci") is None or any(c.get("rps_ci") is None for c in candidates[1:]):
        out["tied_with"] = [c["engine"] for c in candidates]
        out["confidence"] = "one run per cell: no interval, so no claim (use --repeat 3 or more)"
        return out
    tied = [c for c in candidates if c is best or stats.overlaps(c["rps_ci"], best["rps_ci"])]
    if len(tied) == 1:
        out["winner"] = best["engine"]
        out["confidence"] = f"{stats.CONFIDENCE:.0%} intervals separate: {best['engine']} " \
                            f"{_ci(best)} against {runner_up['engine']} {_ci(runner_up)} req/s"
    else:
        out["tied_with"] = [c["engine"] for c in tied]
        out["confidence"] = f"{stats.CONFIDENCE:.0%} intervals overlap: {best['engine']} {_ci(best)} req/s"
    return out


def _ci(cell) -> str:
    low, high = cell["rps_ci"]
    return f"{_k(low)}-{_k(high)}"


def _k(x: float) -> str:
    """Three significant figures or more: 123.4k, 1,482, 97."""
    return f"{x / 1000:.1f}k" if x >= 10000 else f"{x:,.0f}"


def verdicts(cells) -> list[dict]:
    """:func:`column_verdict` of every column, service by service (results.json's ``verdicts``)."""
    return [column_verdict(cells, svc, c) for svc in services(cells) for c in connection_counts(cells, svc)]


def describe_service(service: str, quote: str = "") -> str:
    """``sleep:10 (IO-bound, 10 ms a request)``; ``quote="`"`` makes the spec a Markdown code
    span, so a spec such as ``examples.notes:Notes:`` is never read as markup or an emoji."""
    name, _, arg = service.partition(":")
    kind = KINDS.get(name)
    if kind and arg:
        kind += f", {arg} ms a request"
    spec = f"{quote}{service}{quote}"
    return f"{spec} ({kind})" if kind else spec


def say(v: dict) -> str:
    """One column's verdict in words: numbers first, no claim the intervals do not carry."""
    at = f"at {v['connections']}"
    if v["winner"]:
        text = f"{at}, {v['winner']} is fastest, {v['ratio']:.2f}x the runner-up ({v['confidence']})"
    elif len(v["tied_with"]) > 1:
        ratio = f", best/runner-up {v['ratio']:.2f}x" if v["ratio"] else ""
        text = f"{at}, a tie between {', '.join(v['tied_with'])} ({v['confidence']}{ratio})"
    elif v["tied_with"]:
        text = f"{at}, only {v['tied_with'][0]} ({v['confidence']})"
    else:
        text = f"{at}, no verdict ({v['confidence']})"
    if v["client_bound"]:
        text += f"; client-bound, not ranked: {', '.join(v['client_bound'])}"
    return text


def verdict(cells, service, cores, quote: str = "") -> str:
    """The service's verdict: one clause per connection count, on how many cores."""
    columns = [column_verdict(cells, service, c) for c in connection_counts(cells, service)]
    if not columns:
        return f"{describe_service(service, quote)}: no cells."
    return f"{describe_service(service, quote)}: " + "; ".join(say(v) for v in columns) + f"; on {cores} cores."


def winner(cells, service, connections) -> dict | None:
    """The winning cell of that column (see :func:`column_verdict`), or None for a tie."""
    name = column_verdict(cells, service, connections)["winner"]
    return next((c for c in ranking(cells, service, connections) if c["engine"] == name), None) if name else None


def below_baseline(cells, service) -> list[dict]:
    """Engine cells slower than their closest baseline (ratio < 1)."""
    return [c for c in cells if c["service"] == service and not c["baseline"]
            and c.get("vs_baseline") is not None and c["vs_baseline"] < 1.0]


def failed(cells) -> list[dict]:
    return [c for c in cells if c["status"] != "ok"]
