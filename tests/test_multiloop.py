"""The multiloop engine beyond the conformance suite (which holds it to every engine's contract):
connections really are spread over its loop threads, every loop drains on SIGTERM, --max-conns
is one count over all loops, and the loops share one thread pool.

The services below report the thread they run on, so a test knows which loop served which
connection; the server finds them through PYTHONPATH (this directory)."""
from __future__ import annotations

import asyncio
import collections
import os
import re
import select
import signal
import threading
import time
from pathlib import Path

import pytest

from multiserve.services import Service
from multiserve.testing.server_process import running_server

pytestmark = pytest.mark.timeout(90)
TESTS = str(Path(__file__).parent)


class LoopThread(Service):
    """Async: sleeps the milliseconds the request names (on the connection's loop), then replies
    with the ident of the thread running it: the loop's."""

    async def handle_async(self, request, conn):
        await asyncio.sleep(int(request or b"0") / 1000)
        return b"%d\n" % threading.get_ident()


class PoolThread(Service):
    """Blocking: replies with the name of the thread running it (a pool thread on event loops)."""

    blocking = True

    def handle(self, request, conn):
        return threading.current_thread().name.encode() + b"\n"


def multiloop(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    return running_server("--engine", "multiloop", "--port", "0", *args, env=env)


def test_connections_are_spread_round_robin_over_the_loop_threads():
    with multiloop("--workers", "3", "--service", "test_multiloop:LoopThread") as srv:
        clients = [srv.connect() for _ in range(6)]
        try:
            idents = [c.request(b"0\n") for c in clients]
            again = [c.request(b"0\n") for c in clients]
        finally:
            for c in clients:
                c.close()
        assert again == idents  # a connection stays on its loop
        assert sorted(collections.Counter(idents).values()) == [2, 2, 2], idents  # 3 loops, 2 each
        assert srv.stop(30) == 0
        err = srv.stderr_text()
    assert "Traceback" not in err, err[-3000:]
    for index in range(3):
        assert f"loop {index} served: connections=2 requests=4 errors=0" in err, err[-3000:]
    assert "stopped: connections=6 requests=12 errors=0" in err


def test_sigterm_drains_the_requests_in_flight_on_every_loop():
    with multiloop("--workers", "3", "--service", "test_multiloop:LoopThread", "--grace", "10") as srv:
        clients = [srv.connect() for _ in range(6)]
        try:
            for c in clients:
                c.send(b"400\n")  # 0.4 s on each connection's loop
            time.sleep(0.1)  # let the requests reach their loops before the signal
            os.kill(srv.pid, signal.SIGTERM)
            idents = [c.readline() for c in clients]
            ends = [c.read_all() for c in clients]  # then each is closed
        finally:
            for c in clients:
                c.close()
        assert all(re.fullmatch(rb"\d+\n", i) for i in idents), idents
        assert len(set(idents)) == 3, idents  # in flight on all three loops at the signal
        assert ends == [b""] * 6
        assert srv.proc.wait(15) == 0
        err = srv.stderr_text()
    assert "Traceback" not in err, err[-3000:]
    for index in range(3):
        assert f"loop {index} served: connections=2 requests=2 errors=0" in err, err[-3000:]
    assert "stopped: connections=6 requests=6 errors=0" in err


def test_max_conns_counts_the_connections_of_every_loop():
    """Two loops, --max-conns 3: the fourth client waits, and a connection closed on the loop
    that does not accept (the second one's) lets it in."""
    with multiloop("--workers", "2", "--max-conns", "3", "--service", "test_multiloop:LoopThread") as srv:
        first, second, third = (srv.connect() for _ in range(3))
        idents = [c.request(b"0\n") for c in (first, second, third)]
        assert idents[0] == idents[2] != idents[1]  # round-robin: loops 0, 1, 0
        fourth = srv.connect()  # the kernel completes the handshake; the server must not serve it
        fourth.send(b"0\n")
        readable, _, _ = select.select([fourth.sock], [], [], 0.5)
        assert readable == [], "a fourth client was served while three were open"
        second.close()  # closed on loop 1
        assert fourth.readline() in idents
        for c in (first, third, fourth):
            c.close()


def test_blocking_calls_of_every_loop_share_one_thread_pool():
    with multiloop("--workers", "2", "--threads", "1", "--service", "test_multiloop:PoolThread") as srv:
        clients = [srv.connect() for _ in range(4)]  # two per loop
        try:
            names = {c.request(b"x\n") for c in clients}
        finally:
            for c in clients:
                c.close()
    assert len(names) == 1 and names.pop().startswith(b"blocking"), names
