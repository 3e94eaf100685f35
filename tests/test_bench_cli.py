"""``multiserve bench`` from the command line: the JSON it writes, exit codes, bad input."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from multiserve.engines import ENGINES
from multiserve.testing import running_server

pytestmark = pytest.mark.timeout(60)

KEYS = {"target", "connections", "pipeline", "processes", "duration_s", "requests", "rps", "errors",
        "mismatches", "latency_us", "timeline"}
OPEN_KEYS = {"rate_target", "rate_achieved", "latency_uncorrected_us"}
PERCENTILES = {"p50", "p90", "p99", "p999", "max"}


# Every registered engine whose module exists.
ENGINE_NAMES = [name for name, target in ENGINES.items()
                if importlib.util.find_spec(target.partition(":")[0]) is not None]
# The server's summary line ("multiserve[pid] stopped: ..."; hybrid's workers say "worker N stopped").
STOPPED = re.compile(r"\] stopped: connections=(\d+) requests=(\d+) errors=(\d+)")


def bench(*args):
    return subprocess.run([sys.executable, "-m", "multiserve", "bench", *args], capture_output=True, text=True, timeout=60)


def test_closed_loop_json_and_table(tmp_path):
    out = tmp_path / "bench.json"
    with running_server("--engine", "asyncio", "--port", "0") as srv:
        target = f"{srv.host}:{srv.port}"
        r = bench(target, "-c", "4", "-d", "1", "--pipeline", "4", "--processes", "2", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "req/s" in r.stdout and "p99" in r.stdout  # the final table (stdout is not a TTY: no progress)
    data = json.loads(out.read_text())
    assert KEYS <= set(data) and not OPEN_KEYS & set(data)
    assert set(data["latency_us"]) == PERCENTILES
    assert (data["target"], data["connections"], data["pipeline"], data["processes"]) == (target, 4, 4, 2)
    assert data["requests"] > 0 and data["mismatches"] == 0 and data["errors"] == {}
    assert data["rps"] == pytest.approx(data["requests"] / data["duration_s"], rel=1e-3)


def test_open_loop_json_has_both_latency_views():
    with running_server("--engine", "thread", "--port", "0") as srv:
        r = bench(f"127.0.0.1:{srv.port}", "-c", "2", "-d", "1", "--rate", "500", "--processes", "1", "--quiet", "--json", "-")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert KEYS | OPEN_KEYS <= set(data)
    assert set(data["latency_uncorrected_us"]) == PERCENTILES
    assert data["rate_target"] == 500
    assert 400 <= data["rate_achieved"] <= 550
    assert data["latency_us"]["p50"] >= data["latency_uncorrected_us"]["p50"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["localhost"], "expected HOST:PORT"),
        (["127.0.0.1:80", "-c", "0"], "connections must be >= 1"),
        (["127.0.0.1:80", "--pipeline", "-1"], "pipeline must be >= 1"),
        (["127.0.0.1:80", "-d", "0"], "duration must be > 0"),
        (["127.0.0.1:99999"], "port must be 1..65535"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(args, message):
    r = bench(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_unwritable_json_path_is_one_line(tmp_path):
    with running_server("--engine", "asyncio", "--port", "0") as srv:
        r = bench(f"127.0.0.1:{srv.port}", "-n", "10", "--processes", "1", "--quiet", "--json", str(tmp_path / "no" / "x.json"))
    assert r.returncode == 2
    assert r.stderr.startswith("multiserve bench: cannot write") and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_a_clean_run_closes_cleanly_so_the_server_counts_no_error(engine):
    """bench half-closes each connection and reads to EOF at the end, never resets it: the server's
    own summary line (after SIGTERM) shows every connection and errors=0, and no "reset by client"."""
    with running_server("--engine", engine, "--port", "0", "--workers", "2") as srv:
        r = bench(f"127.0.0.1:{srv.port}", "-c", "8", "-d", "0.5", "--pipeline", "4", "--processes", "2",
                  "--json", "-")
        assert srv.stop() == 0
        log = srv.stderr_text()
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)  # --json - without --quiet: stdout is the JSON alone
    assert data["errors"] == {} and data["requests"] > 0
    assert "req/s" in r.stderr and "p99" in r.stderr  # the table went to stderr
    (summary,) = STOPPED.findall(log)
    connections, requests, errors = map(int, summary)
    assert (connections, errors) == (8, 0), log[-2000:]
    assert requests >= data["requests"]
    assert "reset by client" not in log


def test_json_to_stdout_keeps_everything_else_on_stderr():
    """Also when the run fails: stdout still parses as JSON, the reasons are on stderr."""
    with running_server("--engine", "asyncio", "--port", "0") as srv:
        r = bench(f"127.0.0.1:{srv.port}", "-n", "20", "--processes", "1", "--expect", "echo", "--json", "-")
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["mismatches"] == 20
    assert "20 mismatched replies" in r.stderr and "mismatch: got" in r.stderr
