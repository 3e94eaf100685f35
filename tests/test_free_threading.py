"""Issue 13 on whichever build runs the suite: the interpreter and the GIL's state are said
everywhere, an engine that cannot run here is refused or skipped with its reason, and
compare/lab run side by side under several interpreters. On a free-threaded build
(``make test-ft``) the first test is the one that matters: no import a server makes turns the
GIL back on."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from multiserve import interpreter
from multiserve.compare import LoadSettings, Options, run_compare
from multiserve.engines import ENGINES, unavailable
from multiserve.launch import ServerProcess

AVAILABLE = [name for name in ENGINES if unavailable(name) is None]
# A stand-in for "gevent is not installed" on a build that has it: a finder that refuses it,
# in a fresh interpreter, so the refusal path runs on both builds.
WITHOUT_GEVENT = """
import sys
class NoGevent:
    def find_spec(self, name, path=None, target=None):
        if name == "gevent" or name.startswith("gevent."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, NoGevent())
from multiserve.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("engine", AVAILABLE)
@pytest.mark.parametrize("protocol", ["line", "http"])
def test_the_ready_line_says_the_interpreter_and_the_gil_while_serving(engine, protocol):
    """A free-threaded build's servers serve with the GIL off, whatever they imported (uvloop,
    httptools, psutil...); a GIL build's say on. Either way the line names the version."""
    extra = ["--protocol", "http", "--app", "multiserve.testing.wsgi_apps:app"] if protocol == "http" else []
    with ServerProcess([sys.executable, "-m", "multiserve", "serve", "--engine", engine, "--port", "0", *extra]) as srv:
        assert srv.interpreter == {"version": interpreter.version_tag(),
                                   "gil_enabled": not interpreter.free_threaded_build()}, srv.stdout_seen
        assert srv.terminate(30) == 0
        assert "THE GIL IS ON" not in srv.stderr_text()


def test_engines_lists_each_with_its_availability():
    out = subprocess.run([sys.executable, "-m", "multiserve", "engines", "--json"], capture_output=True, text=True,
                         timeout=60, check=True)
    data = json.loads(out.stdout)
    assert data["engines"] == {name: unavailable(name) for name in ENGINES}
    assert data["interpreter"]["version"] == interpreter.version_tag()
    assert data["interpreter"]["free_threaded"] == interpreter.free_threaded_build()
    text = subprocess.run([sys.executable, "-m", "multiserve", "engines"], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    for name in ENGINES:
        line = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert line.endswith("available") if unavailable(name) is None else f"unavailable: {unavailable(name)}" in line


def test_serve_refuses_an_engine_this_interpreter_cannot_run_in_one_line():
    out = subprocess.run([sys.executable, "-c", WITHOUT_GEVENT, "serve", "--engine", "gevent", "--port", "0"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "engine gevent is unavailable on this interpreter: gevent is not installed" in lines[0]
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_compare_skips_what_an_interpreter_cannot_run_with_the_reason(tmp_path):
    options = Options(engines=["thread", "gevent"], services=["upper"], connections=[2], baselines=True,
                      pythons=[("a", sys.executable), ("b", sys.executable)],
                      interpreters={"a": {"engines": {}}, "b": {"engines": {"gevent": "no gevent under b"}}})
    planned = {(c.engine, c.python) for c in options.cells()}
    assert ("gevent", "a") in planned and ("gevent", "b") not in planned
    assert ("gevent-streamserver", "a") in planned and ("gevent-streamserver", "b") not in planned
    assert {(x["engine"], x["python"], x["reason"]) for x in options.skipped()} == {
        ("gevent", "b", "no gevent under b"), ("gevent-streamserver", "b", "no gevent under b")}


@pytest.mark.timeout(300)
def test_compare_python_runs_each_server_under_each_interpreter_side_by_side(tmp_path):
    """Two names for this same interpreter: every cell twice, each with its name and the GIL
    state its server reported, one side-by-side row per server with the ratio."""
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "multiserve", "compare", "--engines", "thread,asyncio",
                           "--no-baselines", "--services", "upper", "--connections", "2", "--duration", "0.3",
                           "--warmup", "0", "--repeat", "2", "--python", f"one={sys.executable}",
                           "--python", f"two={sys.executable}", "--out", str(out)],
                          capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    cells = results["cells"]
    assert sorted((c["engine"], c["python"]) for c in cells) == [
        ("asyncio", "one"), ("asyncio", "two"), ("thread", "one"), ("thread", "two")]
    assert all(c["status"] == "ok" and c["gil_enabled"] is (not interpreter.free_threaded_build()) for c in cells), cells
    rows = results["side_by_side"]
    assert [(r["engine"], sorted(r["by_python"])) for r in rows] == [("thread", ["one", "two"]),
                                                                     ("asyncio", ["one", "two"])]
    for r in rows:
        one, two = r["by_python"]["one"]["rps"], r["by_python"]["two"]["rps"]
        assert r["ratios"]["two"]["ratio"] == pytest.approx(two / one)
        assert r["ratios"]["two"]["verdict"] in ("faster", "slower", "tie")
    names = [i["name"] for i in results["machine"]["interpreters"]]
    assert names == ["one", "two"]
    report = (out / "report.md").read_text()
    assert "## Side by side: interpreters" in report and "| one req/s |" in report and "two/one" in report
    assert "## Under `one`" in report and "## Under `two`" in report
    for name in ("one", "two"):
        assert (out / name / "upper-rps.png").exists()


def test_a_malformed_python_option_is_one_line(tmp_path):
    for args, fragment in ((["--python", "nopath"], "expected NAME=PATH"),
                           (["--python", f"x={tmp_path}/missing"], "is not an executable file")):
        for command in (["compare", "--out", str(tmp_path)], ["lab", "race"]):
            out = subprocess.run([sys.executable, "-m", "multiserve", *command, *args], capture_output=True,
                                 text=True, timeout=60)
            assert out.returncode == 2 and fragment in out.stderr and "Traceback" not in out.stderr, out.stderr


@pytest.mark.timeout(300)
def test_lab_python_prints_each_interpreter_side_by_side(tmp_path):
    target = tmp_path / "side.json"
    out = subprocess.run([sys.executable, "-m", "multiserve", "lab", "race", "--count", "2", "--size", "50",
                          "--python", f"one={sys.executable}", "--python", f"two={sys.executable}",
                          "--json", str(target)], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(target.read_text())
    assert sorted(data) == ["one", "two"]
    for report in data.values():
        assert report["experiment"] == "race"
        assert report["machine"]["gil_enabled"] is (not interpreter.free_threaded_build())
    assert "lab race: one = Python" in out.stdout and "one: " in out.stdout and "two: " in out.stdout


@pytest.mark.timeout(300)
def test_lab_race_runs_without_the_gil_on_a_free_threaded_build(tmp_path):
    """Its own process (this test process may have imported an extension that turned the GIL
    on: hdrhistogram's, the load generator's): the lab imports nothing that does, so there it
    stays off on a free-threaded build, and on every build the text follows the measured state."""
    target = tmp_path / "race.json"
    out = subprocess.run([sys.executable, "-m", "multiserve", "lab", "race", "--count", "4", "--size", "300",
                          "--json", str(target)], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(target.read_text())
    assert report["machine"]["free_threaded"] == interpreter.free_threaded_build()
    assert report["machine"]["gil_enabled"] is (not interpreter.free_threaded_build()), out.stderr
    unlocked = [r for r in report["results"] if not r["lock"] and "pause" in r["variant"]]
    assert all(r["lost_updates"] > 0 for r in unlocked)
    assert all(r["lost_updates"] == 0 for r in report["results"] if r["lock"])
    if not report["machine"]["gil_enabled"]:
        assert "happen not to be split" not in report["why"] and "without the GIL" in report["why"]


def _cell(rps, ci, status="ok"):
    return {"rps": rps, "rps_ci": ci, "status": status}


@pytest.mark.parametrize("reference, other, verdict", [
    (_cell(100, [90, 110]), _cell(200, [190, 210]), "faster"),
    (_cell(200, [190, 210]), _cell(100, [90, 110]), "slower"),
    (_cell(100, [90, 110]), _cell(105, [95, 115]), "tie"),
    (_cell(100, None), _cell(200, None), "no interval"),
    (_cell(100, [90, 110]), None, "missing"),
    (_cell(100, [90, 110]), _cell(None, None, "failed"), "missing"),
])
def test_side_by_side_names_a_difference_only_when_the_intervals_separate(reference, other, verdict):
    from multiserve.compare.pythons import compare_two

    got = compare_two(reference, other)
    assert got["verdict"] == verdict
    if verdict != "missing":
        assert got["ratio"] == pytest.approx(other["rps"] / reference["rps"])


def test_the_report_warns_when_a_free_threaded_build_served_with_the_gil_on():
    from multiserve.compare.report import _interpreters

    machine = {"interpreters": [
        {"name": "gil", "implementation": "CPython", "version": "3.11.7", "free_threaded": False,
         "executable": "/x/python", "gil_enabled_serving": True},
        {"name": "ft", "implementation": "CPython", "version": "3.13.5t", "free_threaded": True,
         "executable": "/y/python", "gil_enabled_serving": True}]}
    text = "\n".join(_interpreters(machine))
    assert "`gil`: CPython 3.11.7 (GIL build" in text and "GIL **on** while serving" in text
    assert text.count("WARNING: the GIL was on while serving on this free-threaded build") == 1
    machine["interpreters"][1]["gil_enabled_serving"] = False
    assert "WARNING" not in "\n".join(_interpreters(machine))
