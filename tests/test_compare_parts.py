"""The parts of ``multiserve compare``: baselines, the sampler, the idle check, means and ratios.
(Intervals and verdicts: tests/test_compare_verdicts.py.)"""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from multiserve.compare import aggregate
from multiserve.compare.analysis import add_ratios
from multiserve.compare.baselines import BASELINES, CLOSEST_BASELINE
from multiserve.compare.idle import idle_check, raise_open_file_limit
from multiserve.compare.launcher import Server, ServerFailed, TreeSampler, baseline_command
from multiserve.engines import ENGINES


def read_lines(sock, n):
    buf = b""
    while buf.count(b"\n") < n:
        chunk = sock.recv(4096)
        assert chunk, f"closed after {buf!r}"
        buf += chunk
    return buf


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_speaks_the_protocol_and_exits_0_on_sigterm(name):
    with Server(baseline_command(name, "upper")) as server:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"hello\nwor")  # a whole line and half of the next, pipelined
            sock.sendall(b"ld \xc3\xa9\n")
            assert read_lines(sock, 2) == b"HELLO\nWORLD \xc3\xa9\n"
        server.stop()  # raises unless exit 0


@pytest.mark.timeout(60)
def test_baseline_that_cannot_serve_a_service_says_so_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "multiserve.compare.baselines", "uvloop-protocol",
                           "--service", "sleep:10", "--port", "0"], capture_output=True, text=True, timeout=50)
    assert proc.returncode == 2
    assert "serves only non-blocking services" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_engine_has_a_closest_baseline():
    assert set(CLOSEST_BASELINE) == set(ENGINES)
    assert set(CLOSEST_BASELINE.values()) <= set(BASELINES)


@pytest.mark.timeout(60)
def test_a_server_dying_before_ready_is_reported_with_its_last_line():
    with pytest.raises(ServerFailed, match=r"exited 2 before ready: .*nosuchmodule"):
        Server([sys.executable, "-m", "multiserve.compare.baselines", "threadingtcp", "--service", "nosuchmodule:X"])


@pytest.mark.timeout(60)
def test_sampler_counts_cpu_and_memory_of_forked_children():
    # forkingtcp serves each client in a child process: the sampler must see the child's work.
    with Server(baseline_command("forkingtcp", "cpu:50")) as server:
        sampler = TreeSampler(server.pid).start()
        before = sampler.cpu_seconds()
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"x\n" * 6)  # 6 x 50 ms of CPU in the child
            assert read_lines(sock, 6) == b"X\n" * 6
            assert len(sampler.tree()) == 2
        sampler.stop()
        used = sampler.cpu_seconds() - before
        assert 0.25 <= used < 5, used
        assert sampler.peak_rss > 2 * 1024 * 1024  # two interpreters
        server.stop()


@pytest.mark.timeout(120)
def test_idle_check_holds_connections_and_serves_a_fresh_client():
    limit = raise_open_file_limit()
    assert limit["after"] >= limit["before"]
    row = idle_check("asyncio", 200)
    assert row["status"] == "ok", row["reason"]
    assert row["opened"] == row["held"] == 200
    assert row["fresh_ms"] is not None and row["fresh_ms"] > 0
    assert row["rss_kib_after"] >= row["rss_kib_before"]
    for field in ("idle_rss_kib_per_conn", "idle_pss_kib_per_conn", "used_rss_kib_per_conn", "used_pss_kib_per_conn"):
        assert row[field] is not None and row[field] < 1024, (field, row)  # an idle coroutine is not a MiB


@pytest.mark.timeout(120)
def test_idle_check_reports_a_server_that_cannot_hold_them():
    # --max-conns 4: the server accepts 4 connections and leaves the rest in the listen backlog,
    # where a client sees an open connection that nobody serves; the check must not count them.
    row = idle_check("thread", 20, server_args=("--max-conns", "4"), fresh_timeout=1.0, ping_timeout=2.0)
    assert row["opened"] == 20
    assert row["held"] == 4
    assert row["fresh_ms"] is None
    assert row["status"] == "failed"
    assert row["reason"] == "held 4 of 20; a fresh client was not served"


def run(engine, rps, status="ok", connections=16, baseline=False, errors=0, repeat=0):
    return {"service": "upper", "engine": engine, "baseline": baseline, "connections": connections,
            "rps": rps if status == "ok" else None, "p50_us": 100.0, "p99_us": 900.0, "p999_us": 2000.0,
            "errors": errors, "mismatches": 0, "cpu_s": 1.0, "rss_kib": 20000, "cpu_us_per_request": 10.0,
            "status": status, "reason": "" if status == "ok" else "exit 1 after SIGTERM: boom", "repeat": repeat}


def test_aggregate_takes_means_intervals_spread_and_keeps_failures():
    runs = [run("asyncio", 100.0, repeat=0), run("asyncio", 330.0, repeat=1), run("asyncio", 200.0, repeat=2),
            run("thread", 50.0, repeat=0), run("thread", 0, status="failed", errors=3, repeat=1)]
    cells = {c["engine"]: c for c in aggregate(runs)}
    a = cells["asyncio"]
    assert a["rps"] == pytest.approx(210.0) and a["rps_median"] == 200.0
    assert a["rps_min"] == 100.0 and a["rps_max"] == 330.0
    # t(0.975, 2) = 4.303; s = 115.33 over sqrt(3): half-width 286.5, the low end clipped at 0
    assert a["rps_ci"] == [0.0, pytest.approx(210.0 + 4.303 * 115.3256 / 3 ** 0.5, rel=1e-4)]
    assert a["spread_pct"] == pytest.approx(100.0 * 230 / 210)
    assert a["status"] == "ok" and a["runs"] == 3 and len(a["raw"]) == 3
    t = cells["thread"]
    assert t["status"] == "failed" and t["errors"] == 3
    assert t["reason"] == "1 of 2 runs failed: exit 1 after SIGTERM: boom"
    assert t["rps"] == 50.0  # the mean of the runs that succeeded
    assert t["rps_ci"] is None  # one successful run: no interval


def test_ratios_to_the_closest_and_the_fastest_baseline():
    cells = aggregate([run("asyncio", 300.0), run("thread", 100.0), run("gevent", 0, status="failed"),
                       run("asyncio-streams", 200.0, baseline=True), run("threadingtcp", 125.0, baseline=True),
                       run("uvloop-protocol", 400.0, baseline=True)])
    add_ratios(cells)
    by = {c["engine"]: c for c in cells}
    assert by["asyncio"]["vs_baseline"] == pytest.approx(1.5)
    assert by["asyncio"]["vs_fastest"] == pytest.approx(0.75)
    assert by["thread"]["vs_baseline"] == pytest.approx(0.8)
    assert by["gevent"]["vs_baseline"] is None  # failed: no ratio
    assert by["threadingtcp"]["vs_baseline"] is None  # baselines have none


def test_scheduler_cpu_of_a_process_matches_its_own_clock():
    # /proc/PID/task/*/schedstat is the precise figure the sampler prefers to tick-sampled utime
    import os
    import time

    from multiserve.compare.launcher import _scheduled_seconds

    start_own, start_sched = time.process_time(), _scheduled_seconds(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    own = time.process_time() - start_own
    sched = _scheduled_seconds(os.getpid()) - start_sched
    assert own >= 0.05
    assert sched == pytest.approx(own, abs=0.02)  # the same CPU, counted by the scheduler
    assert _scheduled_seconds(2**22 + 12345) == 0.0  # no such process: nothing, no exception
