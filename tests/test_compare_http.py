"""``multiserve compare --protocol http``: the plan (engine x interface, peers), the peers' command
lines, and end-to-end runs on a tiny matrix with a real peer (gunicorn, uvicorn, granian from the
``peers`` extra: skipped with the reason when not installed, required under CI=true) and with a
``--server`` that serves HTTP."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from multiserve.compare import LoadSettings, Options, run_compare
from multiserve.compare import peers
from multiserve.compare.matrix import http_plan
from multiserve.interpreter import free_threaded_build
from test_compare import check_cpu

WSGI, ASGI = (peers.DEMO_APPS[0], "wsgi"), (peers.DEMO_APPS[1], "asgi")
TINY = LoadSettings(duration=0.3, warmup=0.1)


@pytest.mark.parametrize("workload,path", [("hello", "/hello"), ("upper", "/hello"), ("sleep:10", "/sleep/10"),
                                           ("cpu:1", "/cpu/1"), ("tickets", "/tickets"), ("/api/x?y=1", "/api/x?y=1")])
def test_workloads_map_to_the_demo_apps_paths(workload, path):
    assert peers.workload_path(workload) == path


@pytest.mark.parametrize("bad", ["sleep:x", "cpu:-1", "echo", "tickets:3"])
def test_unknown_workloads_are_refused(bad):
    with pytest.raises(ValueError, match="workload|HTTP workload"):
        peers.workload_path(bad)


def test_plan_runs_asgi_on_event_loop_engines_only_and_skips_missing_peers():
    cells = http_plan(["hello"], ["thread", "asyncio", "hybrid"], [16], [WSGI, ASGI], skip=["granian-asgi"])
    names = [c.engine for c in cells]
    assert names == ["thread/wsgi", "asyncio/wsgi", "hybrid/wsgi", "asyncio/asgi", "hybrid/asgi",
                     "gunicorn-sync", "gunicorn-gthread", "gunicorn-gevent", "granian-wsgi", "uvicorn"]
    assert all(c.protocol == "http" and c.baseline == (c.engine in peers.PEERS) for c in cells)
    assert {c.app for c in cells if c.engine.endswith("/asgi") or c.engine == "uvicorn"} == {ASGI[0]}


@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_every_peer_gets_the_runs_backlog_and_one_process(name):
    argv = peers.PEERS[name].command("m:app", 8123, 777, 2000)
    text = shlex.join(argv)
    assert argv[-1] == "m:app" and "8123" in text and "777" in argv, text
    assert "--workers 1" in text, text
    if name == "gunicorn-gevent":  # raised past the run's connections (default 1000)
        assert "--worker-connections 2000" in text
    if name in ("gunicorn-gthread", "granian-wsgi"):
        assert str(peers.POOL_THREADS) in argv


# The peers are the GIL build's baselines: `make ft` installs no [peers] extra (uvicorn[standard]
# does not resolve on cp313t: no free-threaded wheel of its parts, measured), and compare runs its
# peers from the GIL venv, --python or not.
PEERS_NOT_HERE = ("the peers extra is installed on GIL builds only (uvicorn[standard] has no free-threaded "
                  "build); compare runs them from the GIL venv") if free_threaded_build() else None


def _need(peer: str):
    if not peers.peer_available(peer):
        if PEERS_NOT_HERE:
            pytest.skip(PEERS_NOT_HERE)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{peer} is not installed under CI: the Makefile installs multiserve[peers]")
        pytest.skip(f"{peer} not installed (pip install 'multiserve[peers]')")


# (engine, app, peer): the engine cell and the peer it is compared with
END_TO_END = [("threadpool", WSGI, "gunicorn-gthread"), ("asyncio", ASGI, "uvicorn"),
              ("gevent", WSGI, "gunicorn-gevent"), ("asyncio", WSGI, "granian-wsgi")]


@pytest.mark.parametrize("engine,app,peer", END_TO_END, ids=[p for _, _, p in END_TO_END])
def test_engine_beside_a_peer_end_to_end(tmp_path, engine, app, peer):
    _need(peer)
    skip = [p for p in peers.PEERS if p != peer]
    options = Options(engines=[engine], services=["hello"], connections=[4], load=TINY, repeat=1,
                      protocol="http", apps=[app], skip_peers=skip, out=tmp_path)
    results = run_compare(options)
    cells = {c["engine"]: c for c in results["cells"]}
    cell = f"{engine}/{app[1]}"
    assert set(cells) == {cell, peer}
    for name, c in cells.items():
        assert c["status"] == "ok", (name, c["reason"])
        assert c["raw"][0]["requests"] > 0 and c["rps"] > 0
        assert c["errors"] == 0 and c["mismatches"] == 0 and c["expect"] == "status+body"
        assert c["rss_kib"] > 0
        check_cpu(c)  # a figure, or none when the readings could not pin the window down
    assert cells[cell]["baseline_name"] == peer and cells[cell]["vs_baseline"] is not None
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["settings"]["protocol"] == "http" and data["settings"]["peers_missing"] == skip
    report = (tmp_path / "report.md").read_text()
    assert f"{peer} (baseline)" in report and "GET /hello" in report


def test_cli_with_an_http_server_of_your_own(tmp_path):
    """--server NAME=COMMAND with {app} and {port}, --engines none --no-baselines: only it runs."""
    mine = (f"mine={shlex.quote(sys.executable)} -m multiserve serve --protocol http --app {{app}} "
            "--engine thread --port {port} --backlog {backlog} --log-level warning")
    r = subprocess.run([sys.executable, "-m", "multiserve", "compare", "--protocol", "http", "--engines", "none",
                        "--no-baselines", "--server", mine, "--services", "hello,sleep:5", "--connections", "2",
                        "--duration", "0.3", "--warmup", "0.1", "--repeat", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    cells = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert [(c["service"], c["engine"], c["status"]) for c in cells] == [("hello", "mine", "ok"), ("sleep:5", "mine", "ok")]
    assert all(c["mismatches"] == 0 and c["errors"] == 0 and c["expect"] == "status+body" for c in cells)


@pytest.mark.parametrize("args,message", [
    (["--protocol", "http", "--services", "echo"], "unknown HTTP workload 'echo'"),
    (["--app", "examples.demo_app:app"], "--app serves HTTP: add --protocol http"),
    (["--protocol", "http", "--app", "examples.hello_wsgi:app", "--app", "examples.demo_app:app"], "at most one WSGI"),
    (["--protocol", "http", "--idle-connections", "10"], "not with --protocol http"),
    (["--protocol", "http", "--expect", "upper"], "--expect checks line replies"),
], ids=["workload", "app-without-http", "two-wsgi-apps", "idle", "expect"])
def test_bad_http_compare_input_is_one_line(tmp_path, args, message):
    r = subprocess.run([sys.executable, "-m", "multiserve", "compare", *args, "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_missing_peer_is_skipped_with_one_line(monkeypatch, caplog, tmp_path):
    """Which peers are installed is the environment's: here granian is made unimportable (its
    module spec hidden) and must be left out of the plan, with one line saying so."""
    import importlib.util
    import logging

    if PEERS_NOT_HERE:
        pytest.skip(PEERS_NOT_HERE)  # the other peers must be installed for this check
    from multiserve.cli import build_parser
    from multiserve.compare.cli import options_from

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "granian" else real(name, *a))
    args = build_parser("compare").parse_args(["compare", "--protocol", "http", "--out", str(tmp_path)])
    with caplog.at_level(logging.INFO, logger="multiserve"):
        options = options_from(args)
    assert sorted(options.skip_peers) == ["granian-asgi", "granian-wsgi"]
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert lines == [f"peer {p} skipped: granian is not installed (pip install 'multiserve[peers]')"
                     for p in ("granian-wsgi", "granian-asgi")]
    names = {c.engine for c in options.cells()}
    assert not names & {"granian-wsgi", "granian-asgi"} and "uvicorn" in names
