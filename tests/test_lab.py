"""multiserve lab: each experiment at a small size; invariants and the JSON contract, never timings."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from multiserve.engines import unavailable
from multiserve.interpreter import gil_enabled
from multiserve.lab import EXPERIMENTS, experiment
from multiserve.lab import run as run_experiment
from multiserve.lab.common import Sizes, no_progress

ROW_KEYS = {
    "cpu": {"method", "seconds"}, "io": {"method", "seconds"}, "spawn": {"method", "seconds"},
    "pool": {"method", "seconds"}, "race": {"variant", "lock", "expected", "final", "lost_updates"},
    "semaphore": {"limit", "peak_concurrency"}, "deadlock": {"variant", "detected", "cycle", "completed"},
    "event": {"waiters", "spread_ms"},
}
# Small enough that the whole file runs in seconds; big enough that every code path runs.
TINY = {
    "cpu": Sizes(count=2, size=2000), "io": Sizes(count=5, size=0.05), "spawn": Sizes(count=3, size=1),
    "pool": Sizes(count=20, size=100), "race": Sizes(count=3, size=200), "semaphore": Sizes(count=20, size=0.03),
    "deadlock": Sizes(count=2, size=0.01), "event": Sizes(count=5, size=1),
}


def check_contract(obj, name):
    assert set(obj) == {"experiment", "claim", "verdict", "why", "machine", "results"}
    assert obj["experiment"] == name
    assert obj["verdict"] in ("holds", "does not hold", "inconclusive")
    assert obj["claim"] and obj["why"]
    assert set(obj["machine"]) == {"cores", "python", "gil_enabled", "free_threaded", "executable"}
    assert isinstance(obj["machine"]["cores"], int) and obj["machine"]["cores"] >= 1
    assert isinstance(obj["machine"]["gil_enabled"], bool)
    assert obj["results"], "no rows"
    for row in obj["results"]:
        assert ROW_KEYS[name] <= set(row), f"{name} row misses {ROW_KEYS[name] - set(row)}"
    json.dumps(obj)  # serialisable as it stands


@pytest.fixture(scope="module")
def reports():
    """Each experiment run once, at its tiny size (shared by the tests below)."""
    return {name: run_experiment(experiment(name), TINY[name], no_progress) for name in EXPERIMENTS}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_json_contract(reports, name):
    check_contract(reports[name].to_json(), name)


@pytest.mark.parametrize("name", ["cpu", "io", "spawn", "pool"])
def test_timed_rows_are_positive_and_every_method_ran(reports, name):
    rows = reports[name].results
    # a method this interpreter cannot run (gevent greenlets where gevent is not installed) is a
    # row that says why, and only then
    skipped = [r for r in rows if r.get("skipped")]
    assert [r["method"] for r in skipped] == (["gevent greenlets"] if name == "io" and unavailable("gevent") else [])
    assert all(r["seconds"] is None and r["skipped"] in r["note"] for r in skipped)
    assert all(r["seconds"] > 0 for r in rows if not r.get("skipped"))
    assert len({r["method"] for r in rows}) == len(rows)


def test_race_lock_loses_nothing_and_paused_unlocked_loses_updates(reports):
    rows = reports["race"].results
    for row in rows:
        assert row["final"] == row["expected"] - row["lost_updates"]
        if row["lock"]:
            assert row["lost_updates"] == 0, row
    paused_unlocked = [r for r in rows if not r["lock"] and "pause" in r["variant"]]
    assert {r["variant"].split(",")[0] for r in paused_unlocked} == {"threads", "processes"}
    assert all(r["lost_updates"] > 0 for r in paused_unlocked), paused_unlocked
    assert reports["race"].verdict == "holds"


def test_race_explains_the_plain_decrement_by_the_measured_gil(reports):
    report = reports["race"]
    plain = report.results[-1]
    assert report.machine["gil_enabled"] == gil_enabled()
    if not report.machine["gil_enabled"]:
        assert "happen not to be split" not in report.why and "without the GIL" in report.why
    elif plain["lost_updates"] == 0:
        assert "happen not to be split" in report.why


@pytest.mark.parametrize("gil, lost, says, never", [
    (False, 600, "threads run them at the same time", "happen not to be split"),
    (False, 0, "nothing keeps two threads from interleaving", "happen not to be split"),
    (True, 0, "happen not to be split", "without the GIL"),
    (True, 5, "a thread switch fell between them 5 times", "happen not to be split"),
])
def test_race_text_follows_the_gil_state_and_the_count(gil, lost, says, never):
    from multiserve.lab.race import plain_explained

    text = plain_explained({"bytecode": "LOAD_GLOBAL n; STORE_GLOBAL n", "lost_updates": lost, "expected": 1000}, gil)
    assert says in text and never not in text


def test_semaphore_peak_is_exactly_its_limit(reports):
    row = reports["semaphore"].results[0]
    assert row["peak_concurrency"] == row["limit"] == 5
    slots = {s["slot"] for s in row["spans"]}
    assert slots == set(range(5)) and len(row["spans"]) == 20


def test_deadlock_is_detected_with_both_locks_and_threads(reports):
    opposite, lucky, ordered = reports["deadlock"].results
    assert opposite["deadlocked"] and opposite["detected"] and not opposite["completed"] and not opposite["hung"]
    cycle = opposite["cycle"]
    assert cycle["kind"] == "deadlock"
    assert sorted(cycle["locks"]) == ["lock_a", "lock_b"]
    assert sorted(cycle["threads"]) == ["thread-1", "thread-2"]
    for link in cycle["links"]:  # who holds what, waiting for what, with the code lines
        assert link["holds"] != link["waits_for"]
        assert "with first" in link["held_at"]["code"] and "with second" in link["wait_at"]["code"]
    assert sorted(opposite["outcome"]) == ["done", "stopped by lockdep"]


def test_lockdep_flags_the_inversion_in_a_run_that_did_not_deadlock(reports):
    lucky = reports["deadlock"].results[1]
    assert lucky["completed"] and not lucky["deadlocked"] and lucky["detected"]
    assert lucky["cycle"]["kind"] == "inversion" and sorted(lucky["cycle"]["locks"]) == ["lock_a", "lock_b"]


def test_one_global_order_completes_without_reports(reports):
    ordered = reports["deadlock"].results[2]
    assert ordered["completed"] and not ordered["detected"] and ordered["cycle"] is None


def test_event_wakes_every_waiter(reports):
    for row in reports["event"].results:
        assert row["woken"] == row["waiters"] == 5
        assert row["spread_ms"] >= 0 and row["last_ms"] >= row["first_ms"]


def test_pool_counts_workers(reports):
    rows = {r["method"]: r for r in reports["pool"].results}
    from multiserve.lab.common import cores, default_thread_pool_size

    assert rows["thread per task"]["workers"] == rows["process per task"]["workers"] == 20
    assert rows["process pool: map"]["workers"] == cores()
    assert rows["thread pool: map"]["workers"] == default_thread_pool_size()
    # peaks are sampled every 10 ms, so a tiny run may see none: only their kind is checked
    assert all(isinstance(r[k], int) and r[k] >= 0 for r in rows.values() for k in ("peak_threads", "peak_processes"))


def lab(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "multiserve", "lab", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cli_deadlock_exits_within_the_bound_and_writes_json_and_plot(tmp_path):
    out = lab("deadlock", "--quick", "--json", str(tmp_path / "d.json"), "--plot", str(tmp_path / "d.png"),
              timeout=30)  # the experiment's own bound is 10 s a run; a hang fails here
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "d.json").read_text())
    check_contract(data, "deadlock")
    assert data["results"][0]["detected"] and "lock_a" in out.stdout and "verdict" in out.stdout
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_all_writes_a_list(tmp_path):
    # `all` at full --quick size takes ~15 s; the list format is checked on two cheap experiments
    # through the same code path by patching the registry in a child process.
    script = (
        "import sys, multiserve.lab as lab\n"
        "lab.EXPERIMENTS = {k: lab.EXPERIMENTS[k] for k in ('semaphore', 'deadlock')}\n"
        "import multiserve.lab.cli\n"
        "from multiserve.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, "lab", "all", "--quick", "--json", str(tmp_path / "a.json"),
                          "--plot", str(tmp_path / "plots")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "a.json").read_text())
    assert [d["experiment"] for d in data] == ["semaphore", "deadlock"]
    for d in data:
        check_contract(d, d["experiment"])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["deadlock.png", "semaphore.png"]


@pytest.mark.parametrize("args, message", [
    (["all", "--count", "3"], "--count and --size apply to one experiment"),
    (["semaphore", "--quick", "--json", "/nonexistent-dir/x.json"], "cannot write /nonexistent-dir/x.json"),
])
def test_bad_input_is_one_clear_line(args, message):
    out = lab(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_bad_number_is_a_usage_error():
    out = lab("race", "--count", "0")
    assert out.returncode == 2 and "must be >= 1" in out.stderr and "Traceback" not in out.stderr


def test_a_busy_machine_makes_a_negative_timed_verdict_inconclusive():
    from multiserve.lab import weigh_load
    from multiserve.lab.common import Report, cores

    def report(verdict):
        return Report("cpu", "claim", verdict, "facts", [{"method": "serial", "seconds": 1.0}])

    busy, idle = float(cores()), 0.0
    assert weigh_load(report("does not hold"), busy, timed=True).verdict == "inconclusive"
    assert "the machine was busy" in weigh_load(report("holds"), busy, timed=True).why
    assert weigh_load(report("holds"), busy, timed=True).verdict == "holds"
    assert weigh_load(report("does not hold"), idle, timed=True).verdict == "does not hold"
    assert weigh_load(report("does not hold"), busy, timed=False).verdict == "does not hold"


def test_race_plot_labels_each_bar_in_the_axis_unit(reports):
    from multiserve.lab import race
    from multiserve.lab.plots import plain_number

    rows = reports["race"].results
    fig = race.figure(reports["race"])
    ax = fig.axes[0]
    assert ax.get_ylabel() == "updates lost (%)"
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == [100 * r["lost_updates"] / r["expected"] for r in rows]
    labels = [text.get_text() for text in ax.texts]
    assert labels == [f"{plain_number(h)}%\n({r['lost_updates']:,} of {r['expected']:,})"
                      for h, r in zip(heights, rows)]


@pytest.mark.parametrize("values", [[4, 16, 256], [3, 5, 7], [0.002, 0.5, 30], [20, 3_000, 900_000]])
def test_log_axes_read_plain_numbers(values):
    """matplotlib's default labels a short log range 2x10^0, 3x10^0...; ours must read 2, 3, 256, 10,000."""
    import re

    from multiserve.lab.plots import bars_figure

    fig = bars_figure([f"m{k}" for k in range(len(values))], values, ylabel="seconds (log scale)", title="t", log=True)
    fig.canvas.draw()  # tick labels are made at draw time
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert len(labels) >= 2, labels
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*(\.\d+)?", label) for label in labels), labels


def test_plain_number():
    from multiserve.lab.plots import plain_number

    assert [plain_number(v) for v in (4, 16, 256, 10_000, 1e6, 0.001, 2.5, 0.0002)] == \
        ["4", "16", "256", "10,000", "1,000,000", "0.001", "2.5", "0.0002"]
