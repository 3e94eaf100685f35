"""report.md: one table per service with the winner marked, the verdicts with their intervals,
the ratios to baselines, the plots, the idle-connection (C10K) table and every failure.

Numbers are formatted once, here (:func:`fmt_int`), so a reader (or a test) can match a table
row to its cell in results.json.
"""
from __future__ import annotations

from . import analysis, pythons
from .baselines import FASTEST_BASELINE
from .matrix import CLIENT_BOUND_SHARE

CLIENT_BOUND_PCT = 100 * CLIENT_BOUND_SHARE

WINNER = "★"
TABLE_HEADER = ("| connections | server | req/s | 95% interval | vs baseline | p50 µs | p99 µs | p99.9 µs "
                "| prime ms | first reply p50/max µs | client CPU | errors | wrong replies | CPU µs/req "
                "| peak RSS MiB | status |")


def fmt_int(x) -> str:
    return "–" if x is None else f"{x:,.0f}"


def fmt_ratio(x) -> str:
    return "–" if x is None else f"{x:.2f}x"


def fmt_pct(x) -> str:
    return "–" if x is None else f"{x:.0f}%"


def fmt_ci(ci) -> str:
    return "–" if ci is None else f"{ci[0]:,.0f}-{ci[1]:,.0f}"


def server_label(cell, is_winner=False) -> str:
    if cell["baseline"]:
        return f"{cell['engine']} (baseline)"
    return f"**{cell['engine']}** {WINNER}" if is_winner else cell["engine"]


def _status(cell) -> str:
    if cell["status"] != "ok":
        return f"failed: {cell['reason']}"
    notes = ["client-bound"] if cell.get("client_bound") else []
    if [code for code in cell.get("exit_codes", ()) if code != 0]:
        notes.append("exit " + "/".join(str(c) for c in cell["exit_codes"]) + " after SIGTERM")
    return ", ".join(["ok", *notes])


def slug(service: str) -> str:
    """A file-name-safe form of a service spec: ``sleep:10`` -> ``sleep-10``."""
    return "".join(ch if ch.isalnum() else "-" for ch in service)


def _row(cell, is_winner) -> str:
    rss_mib = None if cell["rss_kib"] is None else cell["rss_kib"] / 1024
    vs = fmt_ratio(cell.get("vs_baseline"))
    if cell.get("baseline_name") and cell.get("vs_baseline") is not None:
        vs += f" {cell['baseline_name']}"
    prime = cell.get("prime") or {}
    cols = (str(cell["connections"]), server_label(cell, is_winner), fmt_int(cell["rps"]),
            fmt_ci(cell.get("rps_ci")), vs,
            fmt_int(cell["p50_us"]), fmt_int(cell["p99_us"]), fmt_int(cell["p999_us"]),
            "–" if prime.get("time_s") is None else f"{prime['time_s'] * 1000:,.0f}",
            "–" if not prime else f"{fmt_int(prime.get('p50_us'))}/{fmt_int(prime.get('max_us'))}",
            fmt_pct(cell.get("client_cpu_pct")),
            str(cell["errors"]), str(cell["mismatches"]), fmt_int(cell.get("cpu_us_per_request")),
            "–" if rss_mib is None else f"{rss_mib:.1f}", _status(cell).replace("|", "/"))
    return "| " + " | ".join(cols) + " |"


def service_table(cells, service) -> list[str]:
    lines = [TABLE_HEADER, "|" + "|".join("---" for _ in range(TABLE_HEADER.count("|") - 1)) + "|"]
    for c in analysis.connection_counts(cells, service):
        column = [x for x in cells if x["service"] == service and x["connections"] == c]
        best = analysis.winner(cells, service, c)
        column.sort(key=lambda x: (not analysis.ok(x), -(x["rps"] or 0)))
        lines += [_row(x, x is best) for x in column]
    return lines


def _fastest_note(cells, service, fastest=FASTEST_BASELINE) -> str | None:
    notes = []
    for c in analysis.connection_counts(cells, service):
        ranked = analysis.ranking(cells, service, c)
        best = ranked[0] if ranked else None
        if best is not None and best.get("vs_fastest") is not None:
            notes.append(f"{best['vs_fastest']:.2f}x at {c} ({best['engine']})")
    if not notes:
        return None
    return f"Fastest engine over the {fastest} baseline (a ratio of means, not a claim): " \
        + ", ".join(notes) + "."


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


def _method(results) -> str:
    s = results["settings"]
    expects = s.get("expect") or {}
    unchecked = [svc for svc, e in expects.items() if e == "any"]
    return (
        f"Each run: a fresh server (listen backlog {s.get('backlog')} for every server), then one "
        f"`multiserve.loadgen` closed-loop run: every connection is first answered once (priming: "
        f"*prime ms* is how long connecting and priming all of them took, *first reply* the median "
        f"and the slowest first reply), then {s['warmup']} s of warm-up on those same connections, then "
        f"{s['duration']} s measured ({_request(s)}), then SIGTERM and exit 0 expected "
        f"(a `--server`'s and a peer's exit code is recorded, not judged). "
        f"{s['repeat']} run(s) per cell, interleaved (A B C, A B C). *req/s* is the mean of the "
        f"runs and *95% interval* its Student-t interval (mean ± t·s/√runs); other numbers are "
        f"medians. CPU is the server's process tree inside the measured window only (– when the "
        f"readings around the window's boundaries were too late or too slow to pin it down); peak RSS sums "
        f"the tree (an upper bound for forking servers). *client CPU* is the load generator's "
        f"({s['load_processes']} process(es)) share of its core in the window: above "
        f"{CLIENT_BOUND_PCT:.0f}% the client was the limit, the cell is marked client-bound and is "
        f"never ranked (its req/s is a lower bound of the server's). "
        f"Verdicts rank engines and `--server`s: one is named fastest ({WINNER}) only when its "
        f"interval lies wholly above every other's; otherwise the servers whose intervals overlap "
        f"the best's are reported as a tie. Baselines are references: *vs baseline* is req/s over "
        f"{_closest(s)}. "
        f"Replies are checked per service ({', '.join(f'{k}: {v}' for k, v in expects.items())})"
        + (f"; not checked for {', '.join(unchecked)} (`any`: the service declares no reply form)" if unchecked else "")
        + ". The trade-off of the defaults: more runs or longer windows narrow the intervals "
        f"(a 3-run t-interval is ±2.5 standard deviations of a run) and so let more columns "
        f"name a winner, at {s['repeat']} x the cost of one pass over the matrix."
    )


def _request(s) -> str:
    if s.get("protocol") != "http":
        return "request `hello world`"
    from .peers import workload_path

    apps = ", ".join(f"`{app}` ({interface.upper()})" for app, interface in s.get("apps", ()))
    paths = ", ".join(f"{w}: `GET {workload_path(w)}`" for w in s["services"])
    return f"HTTP/1.1 keep-alive to {apps}; {paths}; every status checked"


def _closest(s) -> str:
    if s.get("protocol") != "http":
        return ("the same model served plainly (thread/threadpool: threadingtcp, process: forkingtcp, "
                "gevent: gevent-streamserver, asyncio/hybrid: asyncio-streams)")
    from .peers import HTTP_CLOSEST

    text = ("the same model served by a peer, run by its own CLI with one process and the run's backlog ("
            + ", ".join(f"{cell}: {peer}" for cell, peer in HTTP_CLOSEST.items()) + ")")
    if s.get("peers_missing"):
        text += "; not installed, left out: " + ", ".join(s["peers_missing"])
    return text


def _interpreters(machine: dict) -> list[str]:
    """Which interpreter served, and its GIL while serving (issue 13); loud if a free-threaded
    build served with the GIL on."""
    rows = machine.get("interpreters") or []
    lines = []
    for i in rows:
        name = f"`{i['name']}`: " if i.get("name") else ""
        build = "free-threaded build" if i.get("free_threaded") else "GIL build"
        gil = pythons.gil_word(i.get("gil_enabled_serving"))
        lines.append(f"- {name}{i.get('implementation', 'CPython')} {i.get('version')} ({build}, `{i.get('executable')}`), "
                     f"GIL **{gil}** while serving (the servers' ready lines)")
        if i.get("free_threaded") and i.get("gil_enabled_serving") not in (False, None):
            lines.append("  - **WARNING: the GIL was on while serving on this free-threaded build** (an extension "
                         "module without free-threading support, or PYTHON_GIL=1): its figures are a GIL build's")
    return (["Servers ran on:", ""] + lines + [""]) if lines else []


def render(results: dict, plots: dict) -> str:
    """The whole report.md. ``plots`` maps (python name, service) (or a service alone, without
    --python) to its image file names (relative)."""
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
        _method(results),
        "",
    ]
    if s.get("servers"):
        out += ["Your servers (`--server`): " + "; ".join(f"**{n}**: `{cmd}`" for n, cmd in s["servers"]) + ".", ""]
    out += _interpreters(m)
    groups = pythons.by_python(cells)
    for name, sub in groups.items():
        level = "##" if len(groups) == 1 else "###"
        if len(groups) > 1:
            out += [f"## Under `{name}`", ""]
        out += [f"{level} Verdicts", ""]
        out += [f"- {analysis.verdict(sub, svc, m['cores'], quote='`')}" for svc in analysis.services(sub)]
        for svc in analysis.services(sub):
            out += ["", f"{level} `{svc}`" + (f" under `{name}`" if len(groups) > 1 else ""), "",
                    _baseline_note(sub, svc)]
            if note := _fastest_note(sub, svc, s.get("fastest_baseline") or FASTEST_BASELINE):
                out += ["", note]
            out += [""] + service_table(sub, svc) + [""]
            out += [f"![{svc}: {f}]({f})" for f in plots.get((name, svc), plots.get(svc, []) if not name else [])]
        out += [""]
    out += pythons.markdown(results)
    if results.get("skipped"):
        out += ["## Skipped (cannot run under that interpreter)", ""]
        out += [f"- {x['service']} / {x['engine']} / {x['connections']} connections"
                + (f" under `{x['python']}`" if x.get("python") else "") + f": {x['reason']}"
                for x in results["skipped"]] + [""]
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
    out += [f"- {c['service']} / {c['engine']} / {c['connections']} connections"
            + (f" under `{c['python']}`" if c.get("python") else "") + f": {c['reason']}" for c in failures] \
        or ["None."]
    return "\n".join(out) + "\n"
