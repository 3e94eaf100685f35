"""A client pipelining without end does not starve a polite one (engines.base.PIPELINE_QUANTUM).

Counted, not timed: the service answers ``served`` with how many requests its process has
answered so far, so between two round trips of the polite client the difference is what the
flooders got meanwhile: about one quantum each per turn (measured: 1,024 with 4 flooders on the
event loops, 2,048 under gevent, 768-2,816 on threads, whose turns the GIL hands over). Answered
a read at a time instead, a polite client waited behind every flooder's whole read (6,144-8,192
here, where the load generator's pipeline bounds a read; up to 23,000 requests in uvloop's
256 KiB read). ``process`` is not in it: each connection is its own process, with its own count.
thread and threadpool passed this check before the fix too (the GIL's switch interval already
cut their turns short at this depth): for them it guards against a regression, and the drill
shows what the fix gave them (a polite p99 under never-read of 1.2 s -> 52 ms, 0.6 s -> 23 ms).
"""
from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import pytest

from multiserve.engines.base import PIPELINE_QUANTUM
from multiserve.testing.server_process import running_server

# one group with the wrk runs: two floods at once on two cores would measure each other
pytestmark = [pytest.mark.timeout(60), pytest.mark.xdist_group("wrk")]
SERVICE = "multiserve.testing.sample_services:ServedSoFarService"
# Engines whose connections share one process, each taking a turn of a quantum of requests.
SHARED = ["asyncio", "gevent", "multiloop", "hybrid", "thread", "threadpool"]
FLOODERS = 4
PIPELINE = 2048
# the polite client's round trips measured once the flood is going
SAMPLES = 300
# seconds between two of them: this test's client, the server and the load generator share two
# cores, and a client asking back to back took the flooders' core (the flood then stalled)
PACE = 0.001


def flooding(srv) -> subprocess.Popen:
    """multiserve's own load generator: FLOODERS connections pipelining PIPELINE requests each
    (replies read and checked as they come, so the flood never stops for backpressure), in a
    process of its own, so that it is never held up by the polite client's."""
    return subprocess.Popen([sys.executable, "-m", "multiserve", "bench", f"{srv.host}:{srv.port}",
                             "-c", str(FLOODERS), "--pipeline", str(PIPELINE), "-d", "40", "--processes", "1",
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@pytest.mark.parametrize("engine", SHARED)
def test_a_flood_of_pipelined_requests_leaves_others_their_turn(engine):
    args = ["--engine", engine, "--port", "0", "--service", SERVICE]
    if engine in ("hybrid", "multiloop"):
        args += ["--workers", "1"]  # one process (hybrid), one loop (multiloop): one count
    with running_server(*args) as srv:
        flood = flooding(srv)
        try:
            with socket.create_connection((srv.host, srv.port), timeout=10) as polite:
                reader = polite.makefile("rb")

                def served() -> int:
                    polite.sendall(b"served\n")
                    return int(reader.readline())

                counts = [served()]
                while counts[-1] - len(counts) < 200_000:  # well into the flood (bounded: the timeout)
                    assert flood.poll() is None, "the load generator ended"
                    counts.append(served())
                for _ in range(SAMPLES):
                    time.sleep(PACE)  # leave the load generator its core (2 cores, 3 processes)
                    counts.append(served())
        finally:
            os.killpg(flood.pid, signal.SIGKILL)
            flood.wait(10)
        assert srv.stop(30) == 0
    gaps = [b - a - 1 for a, b in zip(counts[-SAMPLES - 1:], counts[-SAMPLES:])]
    # the round trips during which the flood went on (the load generator shares two cores with
    # the server and this test: now and then it is off its core and nobody floods)
    flooded = [gap for gap in gaps if gap > 0]
    assert len(flooded) >= SAMPLES // 10, ("the flooders were hardly served meanwhile", gaps)
    # a few turns of every flooder's quantum at most (the median: robust to one slow wake-up)
    assert statistics.median(flooded) <= 4 * FLOODERS * PIPELINE_QUANTUM, flooded
