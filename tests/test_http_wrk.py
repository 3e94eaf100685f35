"""A real load generator nobody here wrote, wrk, against every engine (issue 12, point 5).

A short run (one thread, 16 keep-alive connections, 1 s) must be clean: at least one request,
every response a 2xx with the app's body, and no socket error of any kind (connect, read,
write, timeout). wrk's own summary counts only statuses over 399, so a Lua script counts every
non-2xx status and every wrong body itself, and ``done()`` prints the counts as one JSON line.

This checks correctness under load, never speed (that is benchmarks/http_wrk.py). All wrk runs
share one xdist group, so two of them never compete for the 2 cores at once.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from multiserve.testing.clients import real_client
from multiserve.testing.http_conformance import KINDS, http_server, stop_cleanly

# Counted per wrk thread (each runs its own Lua state), summed in done() over setup()'s threads.
SCRIPT = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
non2xx, bad_body = 0, 0
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  if body ~= "hello" then bad_body = bad_body + 1 end
end
function done(summary, latency, requests)
  local non2xx_all, bad_body_all = 0, 0
  for _, t in ipairs(threads) do
    non2xx_all = non2xx_all + t:get("non2xx")
    bad_body_all = bad_body_all + t:get("bad_body")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "non2xx": %d, "bad_body": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "status_over_399": %d}\n',
    summary.requests, non2xx_all, bad_body_all, e.connect, e.read, e.write, e.timeout, e.status))
end
"""


def run_wrk(wrk: str, url: str, script) -> dict:
    """wrk's counts for a 1 s run against ``url``. The 10 s per-request timeout (wrk's default is
    2 s) keeps a loaded 2-core CI machine's slow request from passing for a server error; a
    request that really hangs still shows as a timeout."""
    out = subprocess.run([wrk, "-t1", "-c16", "-d1s", "--timeout", "10s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("WRK_JSON ")]
    assert len(lines) == 1, out.stdout[-2000:]
    return json.loads(lines[0][len("WRK_JSON "):]) | {"output": out.stdout}


@pytest.mark.serial
@pytest.mark.xdist_group("wrk")
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: f"{k[0]}-{k[1]}")
def test_wrk_run_is_clean(kind, tmp_path):
    wrk = real_client("wrk")
    script = tmp_path / "count.lua"
    script.write_text(SCRIPT)
    with http_server(kind) as srv:
        counts = run_wrk(wrk, f"http://{srv.host}:{srv.port}/", script)
        stop_cleanly(srv)
    output = counts.pop("output")
    assert counts["requests"] >= 1, output
    assert {k: v for k, v in counts.items() if k != "requests"} == {
        "non2xx": 0, "bad_body": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0, "status_over_399": 0,
    }, output


@pytest.mark.serial
@pytest.mark.xdist_group("wrk")
def test_the_script_counts_what_it_claims(tmp_path):
    """The Lua counters can fail: a path the app answers 404 for is counted in every column
    that should count it (a script that never counted would pass the test above)."""
    wrk = real_client("wrk")
    script = tmp_path / "count.lua"
    script.write_text(SCRIPT)
    with http_server(("threadpool", "wsgi")) as srv:
        counts = run_wrk(wrk, f"http://{srv.host}:{srv.port}/no-such-path", script)
    assert counts["requests"] >= 1
    assert counts["non2xx"] == counts["bad_body"] == counts["status_over_399"] == counts["requests"], counts["output"]
