"""report.md: one table per service with the winner marked, a verdict, the ratios to baselines,
the plots, the idle-connection (C10K) table and every failure with its reason.

Numbers are formatted once, here (:func:`fmt_int`), so a reader (or a test) can match a table
row to its cell in results.json.
"""
from __future__ import annotations

from . import analysis
from .baselines import FASTEST_BASELINE

WINNER = "★"
TABLE_HEADER = ("| connections | server | req/s | spread | vs baseline | p50 µs | p99 µs | p99.9 µs "
                "| errors | wrong replies | CPU µs/req | peak RSS MiB | status |")


def fmt_int(x) -> str:
    return "–" if x is None else f"{x:,.0f}"


def fmt_ratio(x) -> str:
    return "–" if x is None else f"{x:.2f}x"


def fmt_pct(x) -> str:
    return "–" if x is None else f"{x:.0f}%"


def server_label(cell, is_winner=False) -> str:
    if cell["baseline"]:
        return f"{cell['engine']} (baseline)"
    return f"**{cell['engine']}** {WINNER}" if is_winner else cell["engine"]


def slug(service: str) -> str:
    """A file-name-safe form of a service spec: ``sleep:10`` -> ``sleep-10``."""
    return "".join(ch if ch.isalnum() else "-" for ch in service)


def _row(cell, is_winner) -> str:
    status = cell["status"] if cell["status"] == "ok" else f"failed: {cell['reason']}"
    rss_mib = None if cell["rss_kib"] is None else cell["rss_kib"] / 1024
    vs = fmt_ratio(cell.get("vs_baseline"))
    if cell.get("baseline_name") and cell.get("vs_baseline") is not None:
        vs += f" {cell['baseline_name']}"
    cols = (str(cell["connections"]), server_label(cell, is_winner), fmt_int(cell["rps"]),
            fmt_pct(cell.get("spread_pct")) if cell.get("runs", 1) > 1 else "–", vs,
            fmt_int(cell["p50_us"]), fmt_int(cell["p99_us"]), fmt_int(cell["p999_us"]),
            str(cell["errors"]), str(cell["mismatches"]), fmt_int(cell.get("cpu_us_per_request")),
            "–" if rss_mib is None else f"{rss_mib:.1f}", status.replace("|", "/"))
    return "| " + " | ".join(cols) + " |"


def service_table(cells, service) -> list[str]:
    lines = [TABLE_HEADER, "|" + "|".join("---" for _ in range(TABLE_HEADER.count("|") - 1)) + "|"]
    for c in analysis.connection_counts(cells, service):
        column = [x for x in cells if x["service"] == service and x["connections"] == c]
        best = analysis.winner(cells, service, c)
        column.sort(key=lambda x: (not analysis.ok(x), -(x["rps"] or 0)))
        lines += [_row(x, x is best) for x in column]
    return lines


def _fastest_note(cells, service) -> str | None:
    notes = []
    for c in analysis.connection_counts(cells, service):
        best = analysis.winner(cells, service, c)
        if best is not None and best.get("vs_fastest") is not None:
            notes.append(f"{best['vs_fastest']:.2f}x at {c} ({best['engine']})")
    if not notes:
        return None
    return f"Best engine over the {FASTEST_BASELINE} baseline: " + ", ".join(notes) + "."


def _baseline_note(cells, service) -> str:
    slow = analysis.below_baseline(cells, service)
    if not slow:
        rated = [c for c in cells if c["service"] == service and c.get("vs_baseline") is not None]
        return "Every engine is at or above its closest baseline." if rated else "No baseline ratios (baselines off or failed)."
    items = ", ".join(f"{c['engine']} at {c['connections']} ({c['vs_baseline']:.2f}x {c['baseline_name']})" for c in slow)
    return f"Below their closest baseline: {items}."


def _kib(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def idle_table(idle_rows) -> list[str]:
    lines = ["| engine | target | opened | held | fresh client ms | idle KiB/conn RSS | PSS "
             "| after a request KiB/conn RSS | PSS | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in idle_rows:
        fresh = "not served" if r["fresh_ms"] is None else f"{r['fresh_ms']:.1f}"
        status = r["status"] if r["status"] == "ok" else f"failed: {r['reason']}"
        lines.append(f"| {r['engine']} | {r['target']:,} | {r['opened']:,} | {r['held']:,} | {fresh} "
                     f"| {_kib(r['idle_rss_kib_per_conn'])} | {_kib(r['idle_pss_kib_per_conn'])} "
                     f"| {_kib(r['used_rss_kib_per_conn'])} | {_kib(r['used_pss_kib_per_conn'])} "
                     f"| {status.replace('|', '/')} |")
    return lines


def render(results: dict, plots: dict[str, list[str]]) -> str:
    """The whole report.md. ``plots`` maps a service to its image file names (relative)."""
    m, s, cells = results["machine"], results["settings"], results["cells"]
    v = m["versions"]
    out = [
        "# multiserve compare",
        "",
        f"Measured {m['date']} on {m['cores']} cores ({m['cpu']}, {m['memory_gib']} GiB), {m['python']}, "
        f"gevent {v.get('gevent')}, uvloop {v.get('uvloop')}, commit `{m['commit']}`; "
        f"load average at start {m['loadavg_at_start']}, at the end {m.get('loadavg_at_end')} "
        f"(1/5/15 min; the run itself adds about 2).",
        "",
        f"Command: `{s['command']}`",
        "",
        f"Each cell: a fresh server, {s['warmup']} s of warm-up load, then {s['duration']} s measured with "
        f"the `multiserve.loadgen` closed-loop client (request `hello world`, replies checked), then SIGTERM "
        f"and exit 0 expected. {s['repeat']} run(s) per cell, interleaved; numbers are medians, spread is "
        f"(max-min)/median of req/s. CPU is the server's process tree during the measured load "
        f"(connection set-up included); peak RSS sums the tree (an upper bound for forking servers). "
        f"The load generator ({s['load_processes']} process(es)) shares the {m['cores']} cores with the "
        f"server, so where it is the limit, CPU µs per request is the fairer comparison. "
        f"{WINNER} marks the fastest engine "
        f"of each connection count; *vs baseline* is req/s over the same model served plainly "
        f"(thread/threadpool: threadingtcp, process: forkingtcp, gevent: gevent-streamserver, "
        f"asyncio/hybrid: asyncio-streams).",
        "",
        "## Verdicts",
        "",
    ]
    out += [f"- {analysis.verdict(cells, svc, m['cores'])}" for svc in analysis.services(cells)]
    for svc in analysis.services(cells):
        out += ["", f"## {svc}", "", analysis.verdict(cells, svc, m["cores"]), "", _baseline_note(cells, svc)]
        if note := _fastest_note(cells, svc):
            out += ["", note]
        out += [""] + service_table(cells, svc) + [""]
        out += [f"![{svc}: {name}]({name})" for name in plots.get(svc, [])]
    if results.get("idle"):
        limit = results.get("open_files") or {}
        out += ["", "## Idle connections (C10K)", "",
                (f"Open-file limit: soft {limit.get('before')} raised to {limit.get('after')} (hard {limit.get('hard')}). "
                 if limit.get("before") != limit.get("after") else
                 f"Open-file limit: {limit.get('after')}, already the hard limit (nothing to raise). ") +
                "*held*: idle connections that then answered one request each (within 30 s + 1 ms per "
                "connection); *fresh client*: connect and one request while all are open (10 s at most). "
                "Memory per connection is the server tree's growth: *idle* over the connections opened, "
                "measured once the fresh client is answered (so all were accepted); *after a request* "
                "over those held. PSS splits pages that forked processes share.", ""]
        out += idle_table(results["idle"])
    failures = analysis.failed(cells)
    out += ["", "## Failed cells", ""]
    out += [f"- {c['service']} / {c['engine']} / {c['connections']} connections: {c['reason']}" for c in failures] \
        or ["None."]
    return "\n".join(out) + "\n"
