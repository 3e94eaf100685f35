"""The load generator's library: exact counts against the project's own engines, exact histogram
merging across processes, and the request ring it verifies replies with."""
from __future__ import annotations

import multiprocessing
import random

import pytest

from multiserve.engines import ENGINES
from multiserve.loadgen import LoadSpec, run_load
from multiserve.loadgen import stats
from multiserve.loadgen.runner import split
from multiserve.loadgen.spec import expected_reply, requests_ring, ring_size
from multiserve.testing import running_server

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_exact_counts_against_every_engine(engine):
    with running_server("--engine", engine, "--port", "0") as srv:
        result = run_load(
            LoadSpec(port=srv.port, connections=4, requests=600, duration=None, pipeline=2, processes=2)
        )
    assert result.requests == 600
    assert result.mismatches == 0
    assert result.errors == {}
    assert result.ok
    # every reply was recorded once in the merged histogram, and once in the timeline
    assert result.histogram.get_total_count() == 600
    assert sum(s["requests"] for s in result.timeline) == 600
    assert result.connect["connected"] == 4


def test_duration_run_timeline_and_percentiles():
    with running_server("--engine", "asyncio", "--port", "0") as srv:
        result = run_load(LoadSpec(port=srv.port, connections=4, duration=1.5, processes=2, warmup=0.3))
    assert result.ok and result.errors == {}
    assert 1.45 <= result.duration_s <= 2.0  # the measured window: 1.5 s, give or take loop lateness
    assert [s["second"] for s in result.timeline] == [1, 2]
    assert sum(s["requests"] for s in result.timeline) == result.requests
    assert result.histogram.get_total_count() == result.requests
    lat = result.latency_us
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]


def test_echo_service_with_expect_echo_and_size():
    with running_server("--engine", "thread", "--service", "echo", "--port", "0") as srv:
        good = run_load(LoadSpec(port=srv.port, connections=2, requests=200, duration=None, size=300, expect="echo", processes=1))
        # the same server checked as "upper": every reply is wrong (lower-case letters came back)
        bad = run_load(LoadSpec(port=srv.port, connections=2, requests=200, duration=None, size=300, processes=1))
    assert (good.requests, good.mismatches) == (200, 0)
    assert (bad.requests, bad.mismatches) == (200, 200)


def test_expect_any_sends_the_message_as_is():
    with running_server("--engine", "asyncio", "--service", "echo", "--port", "0") as srv:
        result = run_load(LoadSpec(port=srv.port, connections=1, requests=50, duration=None, expect="any", processes=1))
        piped = run_load(LoadSpec(port=srv.port, connections=2, requests=500, duration=None, expect="any", pipeline=8, processes=1))
    assert (result.requests, result.mismatches) == (50, 0)
    assert (piped.requests, piped.mismatches, piped.errors) == (500, 0, {})
    assert requests_ring(LoadSpec(expect="any")) == [b"hello world\n"]


def test_request_ring_is_unique_fixed_width_and_sized():
    spec = LoadSpec(pipeline=16)
    ring = requests_ring(spec)
    assert len(ring) == ring_size(16) == 1000
    assert len(set(ring)) == len(ring)
    assert {len(r) for r in ring} == {len(b"hello world 000\n")}
    assert expected_reply(spec, ring[7]) == b"HELLO WORLD 007\n"
    assert ring_size(600) == 10000  # more than twice the requests in flight
    sized = requests_ring(LoadSpec(size=64))
    assert {len(r) for r in sized} == {64} and all(r.endswith(b"\n") for r in sized)


@pytest.mark.parametrize(
    "field, value",
    [("connections", 0), ("pipeline", 0), ("expect", "lower"), ("rate", -1), ("size", 3), ("port", 0), ("message", b"a\nb")],
)
def test_bad_spec_is_refused_with_a_reason(field, value):
    spec = LoadSpec(port=9, **{field: value}) if field != "port" else LoadSpec(port=value)
    with pytest.raises(ValueError, match=r"\w"):
        spec.validate()


def test_split_shares_sum_to_the_total():
    assert split(10, 3) == [4, 3, 3]
    assert split(64, 2) == [32, 32]


def _record_samples(samples):
    hist = stats.new_histogram()
    counts = {}
    for value in samples:
        counts[value] = counts.get(value, 0) + 1
    stats.record_counts(hist, counts)
    return stats.encode(hist)


def test_histograms_merged_across_processes_equal_one_histogram_of_all_samples():
    rng = random.Random(3)
    # latencies spread over six orders of magnitude, as a stalled run produces
    samples = [int(rng.lognormvariate(6, 2)) + 1 for _ in range(30000)]
    parts = [samples[i::3] for i in range(3)]
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        encoded = pool.map(_record_samples, parts)
    merged = stats.merge(encoded)
    single = stats.new_histogram()
    for value in samples:
        single.record_value(value)
    assert merged.get_total_count() == single.get_total_count() == len(samples)
    as_list = lambda h: [(v.value_iterated_to, v.count_at_value_iterated_to) for v in h.get_recorded_iterator()]
    assert as_list(merged) == as_list(single)
    assert stats.summary(merged) == stats.summary(single)


def test_progress_callback_sees_the_live_count():
    seen = []
    with running_server("--engine", "asyncio", "--port", "0") as srv:
        result = run_load(LoadSpec(port=srv.port, connections=2, duration=1.2, processes=2),
                          progress=lambda elapsed, total: seen.append((elapsed, total)))
    assert len(seen) >= 2
    assert [t for _, t in seen] == sorted(t for _, t in seen)  # never goes backwards
    assert seen[-1][1] >= result.requests > 0


def test_callable_from_a_script_without_a_main_guard(tmp_path):
    """Workers are spawned; they must not re-run (or fail to import) the caller's __main__."""
    import subprocess
    import sys

    script = (
        "from multiserve.loadgen import LoadSpec, run_load\n"
        "import sys\n"
        "r = run_load(LoadSpec(port=int(sys.argv[1]), connections=2, requests=100, duration=None, processes=2))\n"
        "print('RESULT', r.requests, r.mismatches, r.errors, r.worker_failures)\n"
    )
    with running_server("--engine", "asyncio", "--port", "0") as srv:
        # from stdin (nothing to import) and from a file without `if __name__ == "__main__"`
        path = tmp_path / "unguarded.py"
        path.write_text(script)
        runs = [
            subprocess.run([sys.executable, "-", str(srv.port)], input=script, capture_output=True, text=True, timeout=60),
            subprocess.run([sys.executable, str(path), str(srv.port)], capture_output=True, text=True, timeout=60),
        ]
    for r in runs:
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == ["RESULT 100 0 {} []"]
