"""The load generator against deliberately faulty servers: every fault must show in the report.

The faulty servers are small asyncio servers running in a thread of the test process (the load
generator's workers are separate processes, so they talk over real sockets); each is stopped and
joined at the end of its test.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import pytest

from multiserve.loadgen import LoadSpec, run_load

pytestmark = pytest.mark.timeout(60)


class FaultyServer:
    """An upper-echo line server on 127.0.0.1:0 whose ``reply(conn_state, line)`` can misbehave.

    ``reply`` returns the bytes to write (possibly several lines, possibly none) or ``None`` to
    close the connection.
    """

    def __init__(self, reply):
        self.reply = reply
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = None

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        server.close()
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    async def _handle(self, reader, writer):
        state = {"n": 0, "held": []}
        try:
            while line := await reader.readline():
                out = self.reply(state, line)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10), "faulty server did not start"
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def every_50th_wrong():
    count = {"n": 0}  # over all connections: the 50th, 100th, ... request the server sees

    def reply(state, line):
        count["n"] += 1
        return b"WRONG\n" if count["n"] % 50 == 0 else line.upper()

    return reply


def swap_pairs(state, line):
    """Answers requests two at a time, in reverse order."""
    state["held"].append(line.upper())
    if len(state["held"]) < 2:
        return b""
    first, second = state.pop("held")
    state["held"] = []
    return second + first


def close_after_10(state, line):
    state["n"] += 1
    return None if state["n"] > 10 else line.upper()


def stall_once_a_second():
    last = {"t": time.monotonic()}

    def reply(state, line):
        now = time.monotonic()
        if now - last["t"] >= 1.0:
            time.sleep(0.2)  # blocks the server's whole event loop: every connection stalls
            last["t"] = time.monotonic()
        return line.upper()

    return reply


def bench_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "multiserve", "bench", *args], capture_output=True, text=True, timeout=60
    )


def test_every_50th_reply_wrong_is_counted_and_exits_nonzero(tmp_path):
    with FaultyServer(every_50th_wrong()) as srv:
        out = tmp_path / "r.json"
        r = bench_cli(f"127.0.0.1:{srv.port}", "-c", "4", "-n", "1000", "--processes", "2", "--json", str(out))
    assert r.returncode == 1, r.stderr
    data = json.loads(out.read_text())
    assert data["requests"] == 1000
    assert data["mismatches"] == 20
    assert data["mismatch_examples"][0]["got"] == "WRONG\n"
    assert "mismatch" in r.stdout and "Traceback" not in r.stderr


def test_out_of_order_replies_are_mismatches():
    with FaultyServer(swap_pairs) as srv:
        result = run_load(LoadSpec(port=srv.port, connections=2, requests=400, duration=None, pipeline=2, processes=1))
    # every swapped reply carries the other request's counter
    assert result.requests == 400
    assert result.mismatches == 400
    assert not result.ok


def test_in_order_pipelined_replies_match():
    """The control for the test above: the same server shape, answering in order."""
    with FaultyServer(lambda state, line: line.upper()) as srv:
        result = run_load(LoadSpec(port=srv.port, connections=2, requests=400, duration=None, pipeline=2, processes=1))
    assert (result.requests, result.mismatches, result.errors) == (400, 0, {})


def test_early_close_counts_errors_and_ends_on_time():
    with FaultyServer(close_after_10) as srv:
        started = time.monotonic()
        result = run_load(LoadSpec(port=srv.port, connections=4, duration=1.0, processes=2))
        elapsed = time.monotonic() - started
    assert result.errors.get("closed", 0) >= 4
    assert set(result.errors) <= {"closed", "reset"}
    assert result.requests > 10  # reconnected after each close and kept going
    assert result.mismatches == 0
    assert 0.95 <= result.duration_s <= 2.0  # the measured window: 1 s, give or take loop lateness
    assert elapsed < 15  # ended on its own, not by the test timeout


def test_refused_connections_are_counted_and_cli_exits_nonzero():
    import socket

    with socket.socket() as s:  # a port that was free a moment ago; nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = bench_cli(f"127.0.0.1:{port}", "-c", "3", "-d", "0.5", "--processes", "1", "--json", "-", "--quiet")
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["errors"] == {"refused": 3}
    assert data["requests"] == 0
    assert r.stderr.strip() == "multiserve bench: no request succeeded"


@pytest.mark.serial
def test_open_loop_shows_a_stall_that_closed_loop_hides():
    with FaultyServer(stall_once_a_second()) as srv:
        spec = dict(port=srv.port, connections=4, duration=2.5, processes=1)
        open_loop = run_load(LoadSpec(rate=1000, **spec))
        closed_loop = run_load(LoadSpec(**spec))
    assert open_loop.mismatches == closed_loop.mismatches == 0
    # ~20% of the requests were due during a 200 ms stall: from their intended send time the
    # slowest 1% waited about 190-200 ms
    assert open_loop.latency_us["p99"] >= 150_000
    # measured from the actual send, the queued requests look fast: the stall is hidden
    assert open_loop.latency_uncorrected_us["p99"] < open_loop.latency_us["p99"] / 2
    # closed loop: only the 4 requests in flight during each stall see it
    assert closed_loop.latency_us["p99"] < 100_000
    assert closed_loop.latency_us["max"] >= 150_000  # ...but it did happen
    d = open_loop.to_dict()
    assert d["rate_target"] == 1000
    assert 700 <= d["rate_achieved"] <= 1100


def test_a_server_that_never_answers_cannot_hang_a_counted_run():
    with FaultyServer(lambda state, line: b"") as srv:
        started = time.monotonic()
        result = run_load(LoadSpec(port=srv.port, connections=3, requests=10, duration=None, processes=1, reply_timeout=0.5))
        elapsed = time.monotonic() - started
    assert result.errors == {"timeout": 3}
    assert result.requests == 0 and not result.ok
    assert elapsed < 15
