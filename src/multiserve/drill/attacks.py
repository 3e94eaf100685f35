"""Attackers beside the load: N misbehaving clients of one kind each (``--attack KIND:N``).

=============  ==============================================================================
``slowloris``  trickles a request line a byte every 0.3 s, never ending it; reconnects when
               the server closes it (``--request-timeout`` should)
``idle``       connects and says nothing; reconnects when closed (``--idle-timeout``)
``never-read`` sends requests and never reads a reply (backpressure: the server must stop
               reading from it, and ``--idle-timeout`` close it, without slowing anyone else)
``oversize``   sends a line past ``--max-line`` (the server must answer ERR and close),
               10 times a second at most, each attacker
``churn``      connects and closes at once, 100 times a second at most, each attacker
=============  ==============================================================================

Bounded: N connections at most per attack (1..10,000, C10K's figure), 127.0.0.1 only (the target
is always local), and every attacker stops when the drill does (``AttackRunner.stop``), at the
latest ``deadline`` seconds after it started. They run on one asyncio loop in a thread of the
drill's process: the load generator's workers are separate processes, so the attackers never
share a loop with the probe load. Counted per attack: connections ``opened``, ``closed_by_server``
(EOF or reset seen, or the socket found closed by the peer), ``connect_errors``.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import resource
import socket
import threading

# The measurement: a byte every 0.3 s (an HTTP slowloris sends a header line every 15 s;
# per byte, 0.3 s keeps a line incomplete for minutes on any sane --request-timeout).
SLOWLORIS_INTERVAL = 0.3
# An oversize attacker tests the line limit, not the loopback's bandwidth: 10 rounds/s each.
OVERSIZE_INTERVAL = 0.1
# Bytes past --max-line an oversize line carries (any excess must be refused).
OVERSIZE_EXCESS = 1024
# 100 connects/s per churn attacker: each leaves a TIME_WAIT socket on this side (we close
# first), and Linux's ephemeral range holds ~28,000 ports (32768-60999).
CHURN_INTERVAL = 0.01
# never-read: requests written per write while the socket accepts them (~16 KiB), and its receive buffer
# (small, so the server's replies back up at once; the kernel doubles and floors the value).
NEVER_READ_BURST = 1500
NEVER_READ_RCVBUF = 4096
# How often a connection that never reads is checked for a close by the server (TCP_INFO).
PEER_CHECK_INTERVAL = 0.25
# After a failed connect, an attacker waits this long before it tries again.
RETRY_DELAY = 0.1
# At most this many connects in flight (the loadgen's figure: a SYN burst overflows the backlog).
CONNECT_CONCURRENCY = 256
MAX_ATTACKERS = 10_000
# linux/tcp.h: tcpi_state values (the first byte of TCP_INFO)
TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8


@dataclasses.dataclass
class Attack:
    """``n`` attackers of ``kind``, and what they saw."""

    kind: str
    n: int
    opened: int = 0
    closed_by_server: int = 0
    connect_errors: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_attack(text: str) -> Attack:
    """``"slowloris:300"`` -> Attack; ValueError (one line) for a bad one."""
    kind, sep, count = text.partition(":")
    if kind not in ATTACKERS:
        raise ValueError(f"unknown attack {kind!r}: use one of {', '.join(ATTACKERS)}")
    if not sep or not count.isdigit() or not 1 <= int(count) <= MAX_ATTACKERS:
        raise ValueError(f"attack {text!r}: expected {kind}:N with N 1..{MAX_ATTACKERS}")
    return Attack(kind, int(count))


class AttackConnection(asyncio.Protocol):
    """One attacker's connection: remembers whether the server ended it (``ended``)."""

    def __init__(self):
        self.transport = None
        self.ended = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        pass  # replies (or the server's ERR line) are not checked: the probe load checks its own

    def eof_received(self):
        self._end()
        return False

    def connection_lost(self, exc):
        self._end()
        self.writable.set()

    def pause_writing(self):
        self.writable.clear()

    def resume_writing(self):
        self.writable.set()

    def _end(self):
        if not self.ended.done():
            self.ended.set_result(None)

    def peer_closed(self) -> bool:
        """The server closed or reset this socket, even if we never read (TCP_INFO's state)."""
        if self.ended.done():
            return True
        sock = self.transport.get_extra_info("socket")
        try:
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        except OSError:
            return True
        return state in (TCP_CLOSE, TCP_CLOSE_WAIT)


class _Context:
    """What every attacker of one attack shares: where to connect, its counts, the stop flag."""

    def __init__(self, runner: "AttackRunner", attack: Attack):
        self.runner = runner
        self.attack = attack
        self.host, self.port = runner.host, runner.port

    @property
    def running(self) -> bool:
        return not self.runner.stopping.is_set()

    async def open(self, rcvbuf: int | None = None) -> AttackConnection | None:
        loop = asyncio.get_running_loop()
        sock = None
        try:
            async with self.runner.connect_limit:
                if rcvbuf is not None:
                    sock = socket.socket()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                    sock.setblocking(False)
                    await asyncio.wait_for(loop.sock_connect(sock, (self.host, self.port)), 5.0)
                    _, conn = await loop.create_connection(AttackConnection, sock=sock)
                else:
                    _, conn = await asyncio.wait_for(loop.create_connection(AttackConnection, self.host, self.port), 5.0)
        except (OSError, asyncio.TimeoutError):
            if sock is not None:
                sock.close()
            self.attack.connect_errors += 1
            await self.pause(RETRY_DELAY)
            return None
        self.attack.opened += 1
        self.runner.connections.add(conn)
        return conn

    def done_with(self, conn: AttackConnection) -> None:
        """Count a close by the server, else close it ourselves (abort: the drill is ending or
        the attacker moves on; a lingering FIN handshake would only add noise)."""
        if conn.peer_closed():
            self.attack.closed_by_server += 1
        conn.transport.abort()
        self.runner.connections.discard(conn)

    async def pause(self, seconds: float, conn: AttackConnection | None = None) -> None:
        """Sleep ``seconds``, less if the drill stops or (with ``conn``) the server ends it."""
        waits = [asyncio.ensure_future(self.runner.stopped.wait())]
        if conn is not None:
            waits.append(conn.ended)
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        waits[0].cancel()


async def _slowloris(ctx: _Context) -> None:
    while ctx.running:
        conn = await ctx.open()
        if conn is None:
            continue
        while ctx.running and not conn.ended.done():
            conn.transport.write(b"x")
            await ctx.pause(SLOWLORIS_INTERVAL, conn)
        ctx.done_with(conn)


async def _idle(ctx: _Context) -> None:
    while ctx.running:
        conn = await ctx.open()
        if conn is None:
            continue
        while ctx.running and not conn.ended.done():
            await ctx.pause(3600.0, conn)
        ctx.done_with(conn)


async def _never_read(ctx: _Context) -> None:
    burst = b"never read\n" * NEVER_READ_BURST
    while ctx.running:
        conn = await ctx.open(rcvbuf=NEVER_READ_RCVBUF)
        if conn is None:
            continue
        conn.transport.pause_reading()
        while ctx.running and not conn.peer_closed():
            # write while the socket takes it: once the server stops reading (its backpressure),
            # our buffer passes asyncio's high-water mark and pause_writing ends this burst
            while ctx.running and conn.writable.is_set() and not conn.ended.done():
                conn.transport.write(burst)
                await asyncio.sleep(0)
            await ctx.pause(PEER_CHECK_INTERVAL, conn)
        ctx.done_with(conn)


async def _oversize(ctx: _Context) -> None:
    line = b"x" * (ctx.runner.max_line + OVERSIZE_EXCESS) + b"\n"
    while ctx.running:
        conn = await ctx.open()
        if conn is None:
            continue
        conn.transport.write(line)
        while ctx.running and not conn.ended.done():
            await ctx.pause(3600.0, conn)
        ctx.done_with(conn)
        await ctx.pause(OVERSIZE_INTERVAL)


async def _churn(ctx: _Context) -> None:
    while ctx.running:
        conn = await ctx.open()
        if conn is None:
            continue
        if conn.peer_closed():
            ctx.attack.closed_by_server += 1
        conn.transport.close()  # graceful: a FIN, as a client that changed its mind
        ctx.runner.connections.discard(conn)
        await ctx.pause(CHURN_INTERVAL)


ATTACKERS = {
    "slowloris": _slowloris,
    "idle": _idle,
    "never-read": _never_read,
    "oversize": _oversize,
    "churn": _churn,
}


def raise_open_files(needed: int) -> None:
    """Raise the soft limit on open files towards ``needed`` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class AttackRunner:
    """Runs ``attacks`` against ``host:port`` on an event loop in a thread: ``start()`` returns
    once every attacker made its first connect (at most ``START_TIMEOUT`` s), ``stop()`` ends
    them all and closes every connection. They end by themselves ``deadline`` s after start."""

    START_TIMEOUT = 10.0

    def __init__(self, attacks: list[Attack], host: str, port: int, *, max_line: int, deadline: float):
        self.attacks = attacks
        self.host, self.port = host, port
        self.max_line = max_line
        self.deadline = deadline
        self.stopping = threading.Event()
        self.connections: set[AttackConnection] = set()
        self._first_round = threading.Event()
        self._thread = threading.Thread(target=self._run, name="multiserve-drill-attacks", daemon=True)
        self._loop = None

    def start(self) -> None:
        if not self.attacks:
            return
        raise_open_files(sum(a.n for a in self.attacks) + 1024)  # + the drill's own files
        self._thread.start()
        self._first_round.wait(self.START_TIMEOUT)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self.stopped = asyncio.Event()
        self.connect_limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        watch = asyncio.ensure_future(self._watch_stop())
        tasks = [asyncio.ensure_future(ATTACKERS[a.kind](_Context(self, a))) for a in self.attacks for _ in range(a.n)]
        # the first round is made when every attacker has tried its first connect
        target = sum(a.n for a in self.attacks)
        while sum(a.opened + a.connect_errors for a in self.attacks) < target and not self.stopping.is_set():
            await asyncio.sleep(0.01)
        self._first_round.set()
        await asyncio.wait(tasks, timeout=self.deadline)
        self.stopping.set()
        self.stopped.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        watch.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                with contextlib.suppress(Exception):
                    conn.transport.abort()
        self.connections.clear()
        await asyncio.sleep(0)  # let the aborts' callbacks run before the loop closes

    async def _watch_stop(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(0.05)
        self.stopped.set()

    def stop(self) -> None:
        self.stopping.set()
        self._first_round.set()
        if self._thread.is_alive():
            self._thread.join(10)
