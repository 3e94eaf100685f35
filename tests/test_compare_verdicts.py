"""compare's statistics, verdicts and plot data on synthetic runs: no server, no clock."""
from __future__ import annotations

import argparse
import io
import random

import pytest

from multiserve.compare import aggregate
from multiserve.compare import stats
from multiserve.compare.analysis import column_verdict, say, verdict, verdicts
from multiserve.compare.cli import options_from, add_arguments, summary_tables
from multiserve.compare.launcher import server_command
from multiserve.compare.matrix import expect_for, plan
from multiserve.compare.plots import EMPTY, figure_data, plain_number


def run(engine, rps, *, repeat=0, connections=16, baseline=False, status="ok", client_pct=50.0, service="upper"):
    return {"service": service, "engine": engine, "baseline": baseline, "connections": connections,
            "kind": "baseline" if baseline else "engine",
            "rps": rps if status == "ok" else None, "p50_us": 100.0, "p99_us": 900.0, "p999_us": 2000.0,
            "errors": 0, "mismatches": 0, "cpu_s": 1.0, "rss_kib": 20000, "cpu_us_per_request": 10.0,
            "prime": {"primed": connections, "time_s": 0.01, "p50_us": 300, "max_us": 900},
            "client_cpu_pct": client_pct, "client_bound": client_pct > 90, "exit_code": 0,
            "status": status, "reason": "" if status == "ok" else "boom", "repeat": repeat}


def runs_of(engine, samples, **kw):
    return [run(engine, x, repeat=i, **kw) for i, x in enumerate(samples)]


def test_t_interval_matches_the_textbook():
    low, high = stats.mean_interval([10.0, 12.0, 14.0])  # mean 12, s 2, t(0.975, 2) 4.303
    assert (low, high) == (pytest.approx(12 - 4.303 * 2 / 3 ** 0.5), pytest.approx(12 + 4.303 * 2 / 3 ** 0.5))
    assert stats.mean_interval([5.0]) is None and stats.mean_interval([]) is None
    assert stats.t_quantile(1) == 12.706 and stats.t_quantile(100) == stats.Z_975


def test_identical_samples_are_a_tie_listing_everyone_tied():
    rng = random.Random(1)
    samples = [1000 + rng.uniform(-50, 50) for _ in range(5)]
    cells = aggregate(runs_of("asyncio-a", samples) + runs_of("asyncio-b", list(reversed(samples)))
                      + runs_of("thread", [x * 0.98 for x in samples]))
    v = column_verdict(cells, "upper", 16)
    assert v["winner"] is None
    assert sorted(v["tied_with"]) == ["asyncio-a", "asyncio-b", "thread"]
    assert "intervals overlap" in v["confidence"]
    assert "a tie between" in say(v) and "fastest" not in say(v)


def test_separated_samples_name_the_winner_with_its_ratio():
    cells = aggregate(runs_of("asyncio", [2000, 2050, 1980]) + runs_of("thread", [1000, 1010, 990]))
    v = column_verdict(cells, "upper", 16)
    assert v["winner"] == "asyncio" and v["tied_with"] == []
    assert v["ratio"] == pytest.approx(2010 / 1000)
    assert v["confidence"].startswith("95% intervals separate")
    assert "asyncio is fastest, 2.01x the runner-up" in say(v)


def test_a_winner_must_clear_every_overlap_not_only_the_mean():
    # means 1.2x apart, but one noisy run per server puts the intervals over each other
    cells = aggregate(runs_of("asyncio", [1200, 1500, 900]) + runs_of("thread", [1000, 1010, 990]))
    assert column_verdict(cells, "upper", 16)["winner"] is None


def test_a_client_bound_cell_never_wins_even_when_fastest():
    cells = aggregate(runs_of("asyncio", [5000, 5010, 4990], client_pct=97.0)
                      + runs_of("thread", [1000, 1010, 990]) + runs_of("gevent", [500, 505, 495]))
    v = column_verdict(cells, "upper", 16)
    assert v["winner"] == "thread" and v["client_bound"] == ["asyncio"]
    assert "client-bound, not ranked: asyncio" in say(v)
    only_bound = aggregate(runs_of("asyncio", [5000, 5010, 4990], client_pct=97.0))
    v = column_verdict(only_bound, "upper", 16)
    assert v["winner"] is None and v["tied_with"] == [] and "client-bound" in v["confidence"]


def test_baselines_never_win_and_failed_cells_never_rank():
    cells = aggregate(runs_of("uvloop-protocol", [9000, 9010, 8990], baseline=True)
                      + runs_of("thread", [1000, 1010, 990]) + runs_of("gevent", [2000, 2000, 2000], status="failed")
                      + runs_of("asyncio", [500, 505, 495]))
    v = column_verdict(cells, "upper", 16)
    assert v["winner"] == "thread"


def test_one_run_per_cell_makes_no_claim():
    cells = aggregate([run("asyncio", 2000.0), run("thread", 1000.0)])
    v = column_verdict(cells, "upper", 16)
    assert v["winner"] is None and v["tied_with"] == ["asyncio", "thread"] and "no interval" in v["confidence"]


def test_verdicts_have_one_entry_per_column_with_the_documented_fields():
    cells = aggregate(runs_of("asyncio", [2000, 2050, 1980]) + runs_of("thread", [1000, 1010, 990])
                      + runs_of("asyncio", [20, 21, 19], connections=256) + runs_of("thread", [20, 21, 19], connections=256))
    out = verdicts(cells)
    assert [(v["service"], v["connections"]) for v in out] == [("upper", 16), ("upper", 256)]
    assert set(out[0]) == {"service", "connections", "winner", "tied_with", "ratio", "confidence", "client_bound"}
    assert [v["winner"] for v in out] == ["asyncio", None]
    text = verdict(cells, "upper", 2)
    assert text.startswith("upper (cheap, non-blocking): at 16, asyncio is fastest") and "at 256, a tie" in text
    assert "wins by" not in text


def test_aggregate_keeps_priming_and_the_client_share():
    cells = aggregate(runs_of("thread", [1000, 1010, 990], client_pct=95.0))
    (cell,) = cells
    assert cell["client_bound"] is True and cell["client_cpu_pct"] == 95.0
    assert cell["prime"] == {"time_s": 0.01, "p50_us": 300, "max_us": 900}


@pytest.mark.parametrize("spec, expect", [("upper", "upper"), ("echo", "echo"), ("sleep:10", "upper"),
                                          ("cpu:1", "upper"), ("multiserve.compare.calibration:Handicap", "upper"),
                                          ("multiserve.testing.sample_services:AsyncReverseService", "any")])
def test_replies_are_checked_as_the_service_says(spec, expect):
    assert expect_for(spec) == expect
    assert expect_for(spec, "any") == "any"


def test_server_commands_get_port_service_and_backlog_without_a_shell():
    argv = server_command("./srv --listen 127.0.0.1:{port} --svc '{service}' -b {backlog}", "sleep:10", 4242, 1024)
    assert argv == ["./srv", "--listen", "127.0.0.1:4242", "--svc", "sleep:10", "-b", "1024"]


def test_plan_puts_servers_after_engines_and_before_baselines():
    cells = plan(["upper"], ["thread"], [16], True, [("mine", "srv {port}")])
    kinds = [(c.engine, c.kind) for c in cells]
    assert kinds[:2] == [("thread", "engine"), ("mine", "server")]
    assert all(kind == "baseline" for _, kind in kinds[2:]) and len(kinds) == 7
    assert plan(["upper"], [], [16], False, [("mine", "srv")])[0].template == "srv"


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_accepts_engines_none_with_servers_and_refuses_clashing_names():
    options = options_from(parse("--engines", "none", "--server", "mine=srv {port}", "--no-baselines"))
    assert options.engines == [] and options.servers == [("mine", "srv {port}")]
    with pytest.raises(ValueError, match="'thread' is taken"):
        options_from(parse("--server", "thread=srv {port}"))
    with pytest.raises(ValueError, match="nothing to measure"):
        options_from(parse("--engines", "none", "--no-baselines"))
    with pytest.raises(SystemExit):
        parse("--server", "no-equals-sign")


def test_names_are_printed_literally_not_as_emoji_or_markup():
    from rich.console import Console

    spec = "examples.notes:notes:"  # rich would print ":notes:" as a musical-notes emoji
    cells = aggregate(runs_of("thread", [1000, 1010, 990], service=spec) + runs_of("[bold]x", [900, 901, 899], service=spec))
    results = {"cells": cells, "machine": {"cores": 2}}
    console = Console(file=io.StringIO(), emoji=False, width=200)
    for table in summary_tables(results):
        console.print(table)
    text = console.file.getvalue()
    assert "examples.notes:notes:" in text and "\N{MULTIPLE MUSICAL NOTES}" not in text
    assert "[bold]x" in text


def test_plot_data_offsets_near_equal_series_and_says_when_nothing_succeeded():
    cells = aggregate(runs_of("asyncio", [1000, 1000, 1000]) + runs_of("hybrid", [1010, 1010, 1010])
                      + runs_of("thread", [500, 500, 500])
                      + runs_of("asyncio", [90, 90, 90], connections=256) + runs_of("hybrid", [50, 50, 50], connections=256)
                      + runs_of("thread", [10, 10, 10], connections=256))
    data = figure_data(cells, "upper", "rps")
    by = {s["label"]: s for s in data["series"]}
    # at 16, asyncio and hybrid are 1% apart: nudged apart symmetrically, with different markers
    assert by["asyncio"]["x_factors"][0] < 1.0 < by["hybrid"]["x_factors"][0]
    assert by["asyncio"]["x_factors"][0] * by["hybrid"]["x_factors"][0] == pytest.approx(1.0)
    assert by["thread"]["x_factors"] == [1.0, 1.0]  # far from the others: where it is
    assert by["asyncio"]["x_factors"][1] == 1.0  # at 256 nobody is near anybody
    assert len({s["marker"] for s in data["series"]}) == 3
    assert data["xticklabels"] == ["16", "256"] and data["message"] is None

    failed = aggregate(runs_of("asyncio", [0, 0, 0], status="failed", service="echo"))
    data = figure_data(failed, "echo", "rps")
    assert data["series"] == [] and data["message"] == EMPTY


@pytest.mark.parametrize("value, label", [(1, "1"), (4, "4"), (16, "16"), (256, "256"), (10000, "10,000"),
                                          (0.5, "0.5")])
def test_log_axes_read_plain_numbers(value, label):
    assert plain_number(value) == label


def test_report_shows_intervals_priming_and_the_verdict_in_words():
    from multiserve.compare import report

    cells = aggregate(runs_of("asyncio", [2000, 2050, 1980]) + runs_of("thread", [1000, 1010, 990], client_pct=95.0)
                      + runs_of("gevent", [1000, 1010, 990]))
    machine = {"date": "2026-12-01T00:00:00+00:00", "cores": 2, "cpu": "x", "memory_gib": 1, "python": "CPython",
               "versions": {}, "commit": "abc", "loadavg_at_start": [0, 0, 0]}
    settings = {"command": "multiserve compare", "warmup": 0.1, "duration": 0.5, "repeat": 3, "load_processes": 1,
                "backlog": 1024, "expect": {"upper": "upper"}, "servers": []}
    text = report.render({"machine": machine, "settings": settings, "cells": cells, "idle": []}, {})
    assert "- `upper` (cheap, non-blocking): at 16, asyncio is fastest, 2.01x the runner-up (95% intervals " \
           "separate: asyncio 1,920-2,100 against gevent 975-1,025 req/s); client-bound, not ranked: thread" in text
    row = next(line for line in text.splitlines() if line.startswith("| 16 | **asyncio** ★"))
    assert "| 2,010 | 1,920-2,100 |" in row and "| 10 | 300/900 | 50% |" in row
    assert "ok, client-bound" in next(line for line in text.splitlines() if line.startswith("| 16 | thread |"))
