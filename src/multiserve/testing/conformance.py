"""The conformance suite: every engine is held to the same tests (as trio ships its stream checks).

Import it into a test module and it runs against every engine in the registry:

    from multiserve.testing.conformance import *  # noqa: F401,F403

Each test starts the real CLI as a subprocess on port 0 and talks to it over 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import psutil
import pytest

from ..engines import ENGINES, unavailable
from .server_process import running_server

__all__ = [name for name in dir() if name.startswith("test_")]  # filled at the end

ENGINE_NAMES = list(ENGINES)


@pytest.fixture(params=ENGINE_NAMES)
def engine(request):
    if reason := unavailable(request.param):  # gevent on a free-threaded build (issue 13)
        pytest.skip(f"engine {request.param} unavailable here: {reason}")
    return request.param


@pytest.fixture
def server(engine):
    with running_server("--engine", engine, "--port", "0") as srv:
        yield srv


def tree_rss(pid: int) -> int:
    """RSS of a process and its children, in bytes."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


def assert_clean_exit(srv, timeout=30.0):
    code = srv.stop(timeout)
    err = srv.stderr_text()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "stopped: connections=" in err
    return err


# -- correctness ----------------------------------------------------------------------------------

def test_upper_and_echo_pass_any_bytes(engine):
    body = [b"hello world\n", "w\u00f6rld \u00e9t\u00e9\n".encode(), b"\xff\xfe\x80 invalid utf-8\n", b"\n", b"MiXeD 123\n"]
    with running_server("--engine", engine, "--port", "0") as srv:
        with srv.connect() as c:
            for line in body:
                assert c.request(line) == line.upper()
        assert_clean_exit(srv)
    with running_server("--engine", engine, "--port", "0", "--service", "echo") as srv:
        with srv.connect() as c:
            for line in body:
                assert c.request(line) == line


def test_user_service_with_connection_state(engine):
    spec = "multiserve.testing.sample_services:CountingService"
    with running_server("--engine", engine, "--port", "0", "--service", spec) as srv:
        with srv.connect() as a, srv.connect() as b:
            assert a.request(b"x\n") == b"1 X\n"
            assert a.request(b"y\n") == b"2 Y\n"
            assert b.request(b"z\n") == b"1 Z\n"  # state is per connection
            assert a.request(b"w\n") == b"3 W\n"


def test_user_async_service(engine):
    spec = "multiserve.testing.sample_services:AsyncReverseService"
    with running_server("--engine", engine, "--port", "0", "--service", spec) as srv:
        with srv.connect() as c:
            assert c.request(b"abc\n") == b"cba\n"
            c.send(b"one\ntwo\n")
            assert (c.readline(), c.readline()) == (b"eno\n", b"owt\n")


def test_an_async_service_serves_concurrent_connections(engine):
    """Coroutine services under engines that are not event loops run on an event loop of their
    own per OS thread; eight connections at once must not meet another's running loop."""
    spec = "multiserve.testing.sample_services:AsyncReverseService"
    with running_server("--engine", engine, "--port", "0", "--service", spec) as srv:
        async def client(i):
            reader, writer = await asyncio.open_connection(srv.host, srv.port)
            try:
                got = []
                for n in range(5):
                    writer.write(b"ab%d-%d\n" % (i, n))
                    got.append(await reader.readline())
                return got == [b"%d-%dba\n" % (n, i) for n in range(5)] or got
            finally:
                writer.close()

        async def main():
            return await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(8))), 60)

        results = asyncio.run(main())
        assert all(r is True for r in results), results
        assert_clean_exit(srv)


def test_bad_service_is_one_clear_error(engine):
    with pytest.raises(RuntimeError, match="did not become ready") as info:
        with running_server("--engine", engine, "--port", "0", "--service", "no.such.module:Thing", ready_timeout=15):
            pass
    assert "cannot import service module" in str(info.value)
    assert "Traceback" not in str(info.value)


SAMPLES = "multiserve.testing.sample_services:"


@pytest.mark.parametrize("kind", ["FailingService", "FailingAsyncService", "FailingCpuService"])
def test_a_raising_service_gets_one_err_line_and_the_connection_goes_on(engine, kind):
    with running_server("--engine", engine, "--port", "0", "--service", SAMPLES + kind) as srv:
        with srv.connect() as c:
            assert c.request(b"fail once\n") == b"ERR service error\n"
            assert c.request(b"still here\n") == b"STILL HERE\n"
            assert c.request(b"fail twice\n") == b"ERR service error\n"
            assert c.request(b"and again\n") == b"AND AGAIN\n"
        assert srv.stop(30) == 0
        err = srv.stderr_text()
    assert "stopped: connections=1 requests=4 errors=0" in err, err[-3000:]
    # the user's traceback once (to debug their service), then one line per failure
    assert err.count("(traceback shown once)") == 1 and "Traceback" in err, err[-3000:]
    assert err.count("failed on purpose") >= 2, err[-3000:]


def test_a_reply_that_is_not_bytes_is_a_service_error(engine):
    with running_server("--engine", engine, "--port", "0", "--service", SAMPLES + "StrReplyService") as srv:
        with srv.connect() as c:
            assert c.request(b"abc\n") == b"ERR service error\n"
            assert c.request(b"def\n") == b"ERR service error\n"
        err = assert_clean_exit(srv)
    assert "returned str" in err


def test_a_raising_setup_gets_one_err_line_counted_alike(engine):
    with running_server("--engine", engine, "--port", "0", "--service", SAMPLES + "FailingSetupService") as srv:
        with srv.connect() as c:
            c.send(b"hello\n")
            assert c.read_all() == b"ERR service error\n"
        assert srv.stop(30) == 0
        err = srv.stderr_text()
    assert "stopped: connections=1 requests=0 errors=1" in err, err[-3000:]
    assert "could not set up this connection" in err


def test_in_process_serve_stops_on_stop_set(engine):
    """``multiserve.serve(..., stop=Stop())`` on the main thread, stopped by ``stop.set()`` from
    another thread (no signal): the engine drains and returns its counts."""
    proc = subprocess.run([sys.executable, "-m", "multiserve.testing.in_process", engine],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["found"] == {"replies": "ONE\nTWO\nTHREE\nLAST\n"}, (result, proc.stderr[-3000:])
    assert result["stats"] == [1, 4, 0], (result, proc.stderr[-3000:])
    assert result["repr"] == "ServeStats(connections=1, requests=4, errors=0)"
    assert result["reason"] == "the test is done"
    assert "Traceback" not in proc.stderr and "stopped: connections=1 requests=4 errors=0" in proc.stderr


async def _client(host, port, index, requests):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in range(requests):
            line = b"client %d request %d\n" % (index, i)
            writer.write(line)
            reply = await reader.readline()
            if reply != line.upper():
                return f"client {index} request {i}: got {reply!r}"
        return None
    finally:
        writer.close()


def test_200_concurrent_clients(engine):
    with running_server("--engine", engine, "--port", "0", "--backlog", "512") as srv:
        async def main():
            return await asyncio.wait_for(
                asyncio.gather(*(_client(srv.host, srv.port, i, 50) for i in range(200))), 90)

        failures = [f for f in asyncio.run(main()) if f]
        assert failures == []
        err = assert_clean_exit(srv)
        assert "connections=200 requests=10000 errors=0" in err


def test_1000_pipelined_requests_in_one_write(server):
    lines = [b"pipelined %d\n" % i for i in range(1000)]
    with server.connect() as c:
        c.send(b"".join(lines))
        for line in lines:
            assert c.readline() == line.upper()


def test_request_written_a_byte_at_a_time(server):
    with server.connect() as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in b"trickled line\n":
            c.send(bytes([byte]))
        assert c.readline() == b"TRICKLED LINE\n"


def test_partial_last_line_is_answered_at_eof(server):
    with server.connect() as c:
        c.send(b"first\nlast without newline")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.read_all() == b"FIRST\nLAST WITHOUT NEWLINE"


def _reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_client_reset_mid_request_leaves_others_unharmed(server):
    with server.connect() as other:
        assert other.request(b"before\n") == b"BEFORE\n"
        for _ in range(5):
            victim = server.connect()
            victim.send(b"half a requ")
            _reset(victim.sock)
        vanisher = server.connect()
        vanisher.send(b"x\n" * 50000)  # replies pile up, then the client vanishes mid-write
        _reset(vanisher.sock)
        assert other.request(b"after\n") == b"AFTER\n"
    err = assert_clean_exit(server)
    assert err.count("\n") < 30  # at most a line per misbehaving client


# -- limits ---------------------------------------------------------------------------------------

def test_oversized_line_gets_err_and_memory_stays_bounded(engine):
    limit = 256 * 1024
    with running_server("--engine", engine, "--port", "0", "--max-line", str(limit)) as srv:
        with srv.connect() as other:
            assert other.request(b"warm up\n") == b"WARM UP\n"
            flood = srv.connect(timeout=20)
            assert flood.request(b"first a good one\n") == b"FIRST A GOOD ONE\n"  # its worker exists
            before = tree_rss(srv.pid)
            peak = before
            stop = threading.Event()

            def send_flood():
                chunk = b"x" * 65536
                with contextlib.suppress(OSError):
                    for _ in range(20 * 16):  # 20 MiB, no newline
                        if stop.is_set():
                            return
                        flood.sock.sendall(chunk)

            sender = threading.Thread(target=send_flood, daemon=True)
            sender.start()
            reply = flood.readline()
            stop.set()
            peak = max(peak, tree_rss(srv.pid))
            assert reply == b"ERR line too long (limit %d bytes)\n" % limit
            sender.join(10)
            flood.close()
            assert other.request(b"still here\n") == b"STILL HERE\n"
            peak = max(peak, tree_rss(srv.pid))
        # buffering the whole 20 MiB would grow it by 20 MiB; bounded framing by about the limit
        assert peak - before < 8 * limit, (before, peak)
        assert_clean_exit(srv)


def test_a_long_line_within_a_raised_limit_is_answered_whole(engine):
    """8 MiB arriving in many reads: the line is assembled once (a bytearray), not re-joined on
    every read (which made 40 MiB take 10 s); the reply is the whole line, upper-cased."""
    size = 8 << 20
    with running_server("--engine", engine, "--port", "0", "--max-line", str(2 * size)) as srv:
        with srv.connect(timeout=60) as c:
            sender = threading.Thread(target=c.sock.sendall, args=(b"x" * size + b"\n",), daemon=True)
            sender.start()
            got = bytearray()
            while len(got) < size + 1:
                chunk = c.sock.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
            sender.join(30)
        assert len(got) == size + 1 and got[:3] == b"XXX" and got.endswith(b"X\n")
        assert_clean_exit(srv)


def test_idle_timeout(engine):
    with running_server("--engine", engine, "--port", "0", "--idle-timeout", "1") as srv:
        with srv.connect() as c:
            assert c.request(b"hi\n") == b"HI\n"
            started = time.monotonic()
            assert c.readline() == b"ERR idle timeout\n"
            assert c.read_all() == b""
            assert time.monotonic() - started >= 0.9


def test_request_timeout_stops_a_trickling_client(engine):
    with running_server("--engine", engine, "--port", "0", "--request-timeout", "1", "--idle-timeout", "5") as srv:
        with srv.connect() as c:
            got = []

            def read():
                with contextlib.suppress(OSError):
                    got.append(c.readline())

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            started = time.monotonic()
            with contextlib.suppress(OSError):
                while reader.is_alive() and time.monotonic() - started < 10:
                    c.send(b"a")  # a byte every 200 ms: an idle timer reset by each byte never fires
                    reader.join(0.2)
            reader.join(5)
            assert got == [b"ERR request timeout\n"]
            assert 0.9 <= time.monotonic() - started < 5


def test_client_that_never_reads_cannot_grow_memory(engine):
    with running_server("--engine", engine, "--port", "0") as srv:
        # warm up every thread/worker first: their one-time stacks and malloc arenas are not
        # what this test is about
        async def warm_up():
            await asyncio.gather(*(_client(srv.host, srv.port, i, 20) for i in range(40)))

        asyncio.run(asyncio.wait_for(warm_up(), 60))
        with srv.connect() as other:
            assert other.request(b"warm up\n") == b"WARM UP\n"
            greedy = socket.create_connection((srv.host, srv.port), timeout=2)
            greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            greedy.sendall(b"hello\n")
            assert greedy.recv(100) == b"HELLO\n"  # served, so its thread/process/task exists
            request = b"never read me %08d\n" % 0
            chunk = request * (65536 // len(request))
            for _ in range(48):  # 3 MiB: its thread, arena and buffers are all in use by now
                greedy.sendall(chunk)
            before = tree_rss(srv.pid)
            sent = 3 << 20
            with contextlib.suppress(OSError):  # the send blocks once the server stops reading us
                while sent < 10 * 1024 * 1024:
                    greedy.sendall(chunk)
                    sent += len(chunk)
            after = tree_rss(srv.pid)
            assert other.request(b"unharmed\n") == b"UNHARMED\n"
            # 10 MB of requests make 10 MB of replies: held in the server, that is what would grow
            assert after - before < 4 * 1024 * 1024, (before, after, sent)
            _reset(greedy)


def test_idle_clients_do_not_starve_a_new_one(engine):
    # more idle clients than the threadpool engine has threads (32 by default)
    with running_server("--engine", engine, "--port", "0", "--threads", "4") as srv:
        idle = [srv.connect() for _ in range(40)]
        try:
            for c in idle[:5]:
                assert c.request(b"then idle\n") == b"THEN IDLE\n"
            with srv.connect(timeout=5) as fresh:
                assert fresh.request(b"fresh\n") == b"FRESH\n"
        finally:
            for c in idle:
                c.close()


def test_max_conns_queues_the_third_client(engine):
    with running_server("--engine", engine, "--port", "0", "--max-conns", "2") as srv:
        a, b = srv.connect(), srv.connect()
        assert a.request(b"a\n") == b"A\n"
        assert b.request(b"b\n") == b"B\n"
        third = srv.connect()  # the kernel completes the handshake; the server must not serve it
        third.send(b"third\n")
        readable, _, _ = select.select([third.sock], [], [], 0.5)
        assert readable == [], "a third client was served while two were open"
        a.close()
        assert third.readline() == b"THIRD\n"
        assert b.request(b"b again\n") == b"B AGAIN\n"
        b.close()
        third.close()


def test_sigterm_lets_the_inflight_request_finish(engine):
    with running_server("--engine", engine, "--port", "0", "--service", "sleep:500", "--grace", "10") as srv:
        with srv.connect() as idle_client, srv.connect() as c:
            assert idle_client.request(b"x\n") == b"X\n"
            c.send(b"slow\n")
            time.sleep(0.1)  # let the request reach the service before the signal
            os.kill(srv.pid, signal.SIGTERM)
            assert c.readline() == b"SLOW\n"
            assert idle_client.read_all() == b""  # the idle one is closed, not left hanging
        assert srv.proc.wait(10) == 0
        err = srv.stderr_text()
        assert "Traceback" not in err and "stopped: connections=2 requests=2" in err


def test_sleep_overlaps_across_connections(engine):
    with running_server("--engine", engine, "--port", "0", "--service", "sleep:200") as srv:
        clients = [srv.connect() for _ in range(20)]
        try:
            started = time.monotonic()
            for i, c in enumerate(clients):
                c.send(b"s%d\n" % i)
            for i, c in enumerate(clients):
                assert c.readline() == b"S%d\n" % i
            elapsed = time.monotonic() - started
        finally:
            for c in clients:
                c.close()
        assert elapsed < 0.5 * 20 * 0.2, f"20 x sleep:200 took {elapsed:.2f}s: requests did not overlap"


__all__ = ["engine", "server"] + [name for name in dir() if name.startswith("test_")]
