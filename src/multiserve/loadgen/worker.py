"""One worker process: one event loop (uvloop when installed) driving its share of connections.

Life cycle, driven by the parent (:mod:`multiserve.loadgen.runner`) through a pipe and an Event:

1. connect every connection (concurrently, each bounded by ``connect_timeout``), report
   ``("ready", connect_report)``;
2. wait for the parent's Event (the green light), read the shared start time ``t0`` (CLOCK_MONOTONIC,
   the same clock in every process) and start all connections at ``t0``;
3. warm up, record for ``duration`` (or until the request quota is answered), report
   ``("done", report)`` with histograms in HdrHistogram's encoding, and exit.

A connection the server closes or resets is counted and reconnected; if a reconnect fails, that
connection stays down for the rest of the run. What is counted is what a user cares about:

``lost``     requests sent and never answered: in flight when their connection ended (per request)
``closed``   connections the server closed (EOF) with nothing in flight: a graceful close, no loss
``reset``    connections reset by the server (their requests in flight are also ``lost``)
``refused``  connection attempts refused (the first connect or a reconnect)
``timeout``  duration runs: requests without a reply for ``reply_timeout`` seconds; the connection
             is then aborted and reconnected, as a client that gives up does (``-n`` runs: the
             connections still waiting when no reply came for ``reply_timeout``)
``unsent``   open loop: requests whose intended time came while every connection was down for
             good (one that is reconnecting queues them)
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import time

from ..engines.loops import loop_name, new_event_loop
from . import stats
from .connection import LoadConnection, now_us
from .errors import error_kind
from .spec import LoadSpec, expected_reply, requests_ring

# At most this many connects in flight at once: a burst of thousands of SYNs overflows the
# server's listen backlog (Linux default somaxconn 4096) and costs 1 s SYN retransmits.
CONNECT_CONCURRENCY = 256
# The live request counter in shared memory is refreshed this often (the progress line's tick).
PROGRESS_INTERVAL = 0.25
# Mismatching replies kept as examples (the report shows "the first few").
MAX_EXAMPLES = 5
# A reply line longer than this without a newline is counted as a mismatch and dropped:
# the server's own line limit (protocol.framing.DEFAULT_MAX_LINE).
MAX_REPLY = 65536
# At the end of a run each connection half-closes and reads to the server's EOF (see
# LoadConnection.close_cleanly) for at most this long: ample for a server to answer the requests
# still in flight (at most --pipeline per connection); one that never closes costs only this.
CLOSE_TIMEOUT = 2.0
# Open loop: the scheduler batches requests due within this many seconds (uvloop's timers have
# 1 ms resolution, so a finer tick would not fire sooner).
MIN_TICK = 0.001

class Worker:
    """The state the connections of one process share (see LoadConnection for the hot path)."""

    def __init__(self, spec: LoadSpec, index: int, connections: int, first_conn: int, quota, rate):
        self.spec = spec
        self.index = index
        self.open_loop = spec.open_loop
        self.pipeline = spec.pipeline
        self.check = spec.expect != "any" if spec.http is None else spec.http.expect_body is not None
        self.max_reply = MAX_REPLY
        self.reqs = requests_ring(spec)
        self.reps = [expected_reply(spec, r) for r in self.reqs]
        self.ring = len(self.reqs)
        self.line_len = len(self.reqs[0])
        self.stream_len = self.ring * self.line_len
        # repeated, so a burst of up to ``pipeline`` lines starting anywhere in the ring is one
        # slice / one startswith (twice is enough when the ring is longer than the pipeline)
        copies = 2 + self.pipeline // self.ring
        self.req_stream = b"".join(self.reqs) * copies
        self.rep_stream = b"".join(self.reps) * copies
        self.quota = quota
        self.rate = rate
        if spec.http is not None:
            from .http import HttpLoadConnection

            self.connection_class = HttpLoadConnection
        else:
            self.connection_class = LoadConnection
        self.conns = [self.connection_class(self, first_conn + i, i) for i in range(connections)]
        self.running = False
        self.recording = False
        self.done = 0
        self.done_before_window = 0
        self.lat: dict[int, int] = {}
        self.raw: dict[int, int] = {}
        self.hist = stats.new_histogram()
        self.raw_hist = stats.new_histogram()
        self.bucket = stats.new_histogram()  # the current timeline bucket's latencies
        self.timeline: list[tuple[int, bytes, dict, int]] = []  # (replies, histogram, errors, mismatches)
        self.bucket_done = 0
        self.bucket_errors: dict[int, dict[str, int]] = {}  # bucket index -> errors by kind
        self.first_bucket_end = 0.0
        self.bucket_mismatches = 0
        self.errors: dict[str, int] = {}
        self.mismatches = 0
        self.examples: list[tuple[str, str]] = []
        self.connect_hist = stats.new_histogram()
        self.connect_time = 0.0
        self.prime_hist = stats.new_histogram()  # first-reply latency of each primed connection
        self.cpu_start = 0.0  # this process's CPU clock when the measured window opened
        self.cpu_s = 0.0  # CPU seconds this process spent inside the window
        self.window = (0.0, 0.0)
        self.finished: asyncio.Future | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.rr = 0  # open loop round robin
        self.issued = 0
        self.unanswered = 0
        self.progress = None  # shared array: this worker's live reply count, for the parent
        self.last_progress = (0.0, -1)  # (time, replies) when the reply count last moved

    # -- called by connections ---------------------------------------------------------------
    error_kind = staticmethod(error_kind)

    def mismatch(self, got: bytes, expected: bytes | None) -> None:
        if not self.recording:
            return  # warm-up, or a reply read while closing after the run: not counted, as every other figure
        self.mismatches += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((got[:80].decode("ascii", "replace"), "" if expected is None else expected.decode("ascii", "replace")))

    def count_error(self, kind: str, n: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + n
        if self.recording:  # into the timeline bucket of the moment it happened, not of the next tick
            bucket = self.bucket_errors.setdefault(self._bucket_index(time.monotonic()), {})
            bucket[kind] = bucket.get(kind, 0) + n

    def _bucket_index(self, t: float) -> int:
        if t < self.first_bucket_end:
            return 0
        return int((t - self.first_bucket_end) / self.spec.timeline_interval) + 1

    def connection_failed(self, conn: LoadConnection, kind: str) -> None:
        """The server closed or reset ``conn``: count its requests in flight as ``lost``, the
        connection's end by its kind (an EOF with requests in flight is only their loss, so
        ``closed`` means a close that lost nothing), and (during the run) reconnect."""
        if not conn.alive:
            return  # already counted, or closed by us at the end
        conn.alive = False
        if conn.inflight:
            self.count_error("lost", conn.inflight)
        if kind != "closed" or not conn.inflight:
            self.count_error(kind)
        self._replace(conn)

    def _replace(self, conn: LoadConnection) -> None:
        if self.running:
            new = conn.successor()
            self.conns[conn.slot] = new
            self.loop.create_task(self._reconnect(new))

    def quota_exhausted(self) -> None:
        if all(c.inflight == 0 and not c.backlog for c in self.conns):
            self._finish()

    # -- connecting ---------------------------------------------------------------------------
    async def _connect(self, conn: LoadConnection, limit: asyncio.Semaphore, prime: bool = False) -> bool:
        async with limit:
            t = time.perf_counter()
            try:
                if prime:
                    sock = await self._primed_socket(conn, t)
                    await self.loop.create_connection(lambda: conn, sock=sock)
                else:
                    await asyncio.wait_for(
                        self.loop.create_connection(lambda: conn, self.spec.host, self.spec.port),
                        self.spec.connect_timeout,
                    )
            except (OSError, asyncio.TimeoutError) as exc:
                self.count_error(error_kind(exc))
                conn.down = True  # a failed connect is not retried: down for the rest of the run
                return False
            if not prime:
                stats.record_counts(self.connect_hist, {int((time.perf_counter() - t) * 1e6): 1})
            return True

    async def _primed_socket(self, conn: LoadConnection, started: float) -> socket.socket:
        """Connect a plain socket, send ``conn``'s first request and read its reply (checked);
        the socket is then handed to ``conn`` with the ring position moved past that request.
        Records the connect time and the first reply's latency (from its send)."""
        spec, loop = self.spec, self.loop
        family, kind, proto, _, address = (await loop.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM))[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.wait_for(loop.sock_connect(sock, address), spec.connect_timeout)
            sent = time.perf_counter()
            stats.record_counts(self.connect_hist, {int((sent - started) * 1e6): 1})
            request = self.reqs[conn.send_idx]
            await loop.sock_sendall(sock, request)
            if spec.http is not None:
                return await self._primed_http(sock, address, sent)
            reply = b""
            while not reply.endswith(b"\n") and len(reply) <= self.max_reply:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), spec.reply_timeout)
                if not chunk:
                    raise ConnectionResetError("closed before its first reply")
                reply += chunk
            stats.record_counts(self.prime_hist, {int((time.perf_counter() - sent) * 1e6): 1})
            if self.check and reply != self.reps[conn.send_idx]:
                self.mismatch(reply, self.reps[conn.send_idx])
            conn.send_idx = (conn.send_idx + 1) % self.ring
            conn.recv_pos = conn.send_idx * self.line_len
            return sock
        except BaseException:
            sock.close()
            raise

    async def _primed_http(self, sock: socket.socket, address, sent: float) -> socket.socket:
        """The HTTP half of :meth:`_primed_socket`: read the first response through the parser;
        if it ends its connection (``Connection: close``), hand a new connection over instead."""
        from .http import prime_reader

        spec, loop = self.spec, self.loop
        feed = prime_reader(self)
        keep = None
        while keep is None:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), spec.reply_timeout)
            if not chunk:
                raise ConnectionResetError("closed before its first response")
            keep = feed(chunk)
        stats.record_counts(self.prime_hist, {int((time.perf_counter() - sent) * 1e6): 1})
        if keep:
            return sock
        sock.close()
        fresh = socket.socket(sock.family, sock.type, sock.proto)
        try:
            fresh.setblocking(False)
            fresh.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.wait_for(loop.sock_connect(fresh, address), spec.connect_timeout)
        except BaseException:
            fresh.close()
            raise
        return fresh

    async def connect_all(self) -> dict:
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        t = time.perf_counter()
        ok = await asyncio.gather(*(self._connect(c, limit, self.spec.prime) for c in self.conns))
        self.connect_time = time.perf_counter() - t
        return {"connected": sum(ok), "failed": len(ok) - sum(ok)}

    def give_up(self, conn: LoadConnection) -> None:
        """``conn``'s oldest request has waited ``reply_timeout``: count its requests in flight
        as ``timeout``, abort it (a reset, as a client that gives up sends) and reconnect."""
        conn.alive = False
        self.count_error("timeout", conn.inflight)
        conn.transport.abort()
        self._replace(conn)

    async def _reconnect(self, conn: LoadConnection) -> None:
        if await self._connect(conn, asyncio.Semaphore(1)):
            if self.running:
                conn.start(now_us())
            else:  # reconnected after the run ended: its end is ours, not an error to count
                conn.alive = False
        elif conn.backlog:  # this connection stays down: what waited for it is never sent
            self.count_error("unsent", len(conn.backlog))
            conn.backlog.clear()
        elif self.spec.requests is not None and not any(c.alive for c in self.conns):
            self._finish()  # nothing left to answer the quota
        if self.quota == 0:
            self.quota_exhausted()

    # -- the run ------------------------------------------------------------------------------
    def _at(self, when: float, callback, *args):
        """Schedule at an absolute CLOCK_MONOTONIC time (the loop's own clock may differ)."""
        return self.loop.call_at(self.loop.time() + (when - time.monotonic()), callback, *args)

    async def run(self, t0: float) -> None:
        spec = self.spec
        self.finished = self.loop.create_future()
        self.running = True
        window_start = t0 + spec.warmup
        self.window_planned = window_start
        self._at(t0, self._release)
        self._at(window_start, self._open_window)
        if spec.requests is None:
            self._at(window_start + spec.duration, self._finish)
        self._at(t0 + PROGRESS_INTERVAL, self._progress_tick, t0 + PROGRESS_INTERVAL)
        await self.finished
        await asyncio.gather(*(conn.close_cleanly(CLOSE_TIMEOUT) for conn in self.conns))

    def _release(self) -> None:
        if self.spec.warmup == 0:
            self._open_window()  # first, so the first requests already count against the quota
        now = now_us()
        if self.open_loop:
            self._t0_us = now
            self._schedule()
        else:
            for conn in self.conns:
                if conn.alive:
                    conn.start(now)

    def _open_window(self) -> None:
        if self.recording or not self.running:
            return
        self.done_before_window += self.done
        self.done = 0
        self.lat.clear()
        self.raw.clear()
        self.recording = True
        self.cpu_start = time.process_time()
        start = time.monotonic()
        self.window = (start, start)
        self.bucket_errors = {}
        # Bucket ends are planned from the planned window start, so every worker's buckets
        # cover the same instants and merge exactly (a late start shortens only the first).
        interval = self.spec.timeline_interval
        first = self.first_bucket_end = self.window_planned + (self.spec.timeline_phase or interval)
        while first <= start:
            first += interval
        self._at(first, self._tick, first)

    def _flush(self) -> None:
        """Move the latency counts into the totals and the current bucket's histogram."""
        for value, n in self.lat.items():
            self.bucket.record_value(min(max(value, stats.LOWEST_US), stats.HIGHEST_US), n)
        stats.record_counts(self.hist, self.lat)
        stats.record_counts(self.raw_hist, self.raw)

    def _close_bucket(self, last: bool = False) -> None:
        """Close bucket ``len(timeline)``: the errors stamped with its index (a late tick never
        moves an error into the bucket before its time), and, for the last, all later ones."""
        self._flush()
        index = len(self.timeline)
        errors: dict[str, int] = {}
        for i in [i for i in self.bucket_errors if i <= index or last]:
            for kind, n in self.bucket_errors.pop(i).items():
                errors[kind] = errors.get(kind, 0) + n
        self.timeline.append((self.done - self.bucket_done, stats.encode(self.bucket), errors, self.mismatches - self.bucket_mismatches))
        self.bucket_done = self.done
        self.bucket_mismatches = self.mismatches
        self.bucket = stats.new_histogram()

    def _tick(self, when: float) -> None:
        if self.recording:
            self._close_bucket()
            interval = self.spec.timeline_interval
            self._at(when + interval, self._tick, when + interval)

    def _progress_tick(self, when: float) -> None:
        if not self.running:
            return
        replies = self.done_before_window + self.done
        self.progress[self.index] = replies
        if self.recording:
            self._flush()
        if replies != self.last_progress[1]:
            self.last_progress = (when, replies)
        elif self.spec.requests is not None and when - self.last_progress[0] >= self.spec.reply_timeout:
            for conn in self.conns:
                if conn.inflight:
                    self.count_error("timeout")
            self._finish()
            return
        if self.spec.requests is None:
            self._time_out_stuck(now_us())
        self._at(when + PROGRESS_INTERVAL, self._progress_tick, when + PROGRESS_INTERVAL)

    def _queue_or_drop(self, intended: int) -> None:
        """Open loop, no connection up: queue the request on one that is reconnecting (it is
        sent once that connect succeeds, its latency still counted from ``intended``), as a
        client's pool would; only when every connection is down for good is it ``unsent``."""
        conns = self.conns
        for _ in range(len(conns)):
            conn = conns[self.rr]
            self.rr = (self.rr + 1) % len(conns)
            if not conn.down:
                conn.backlog.append(intended)
                return
        self.count_error("unsent")

    def _time_out_stuck(self, now: int) -> None:
        """Duration runs: give up on every connection whose oldest request in flight was sent
        ``reply_timeout`` ago (checked every PROGRESS_INTERVAL, so at most that much later)."""
        limit = int(self.spec.reply_timeout * 1e6)
        for conn in list(self.conns):
            if conn.alive and conn.inflight and conn.sent:
                oldest = conn.sent[0]
                sent_at = oldest[1] if self.open_loop else oldest[0]
                if now - sent_at >= limit:
                    self.give_up(conn)

    def _schedule(self) -> None:
        """Open loop: issue every request whose intended time has come, spread round robin."""
        if not self.running:
            return
        now = now_us()
        per_us = self.rate / 1e6
        due = int((now - self._t0_us) * per_us) + 1
        if self.quota is not None and self.recording:
            due = min(due, self.issued + self.quota)
        conns = self.conns
        while self.issued < due:
            intended = self._t0_us + int(self.issued / per_us)
            for _ in range(len(conns)):
                conn = conns[self.rr]
                self.rr = (self.rr + 1) % len(conns)
                if conn.alive:
                    conn.offer(intended, now)
                    break
            else:
                self._queue_or_drop(intended)
            self.issued += 1
            if self.quota is not None and self.recording:
                self.quota -= 1
        if self.quota == 0:
            self.quota_exhausted()
            return
        next_at = self._t0_us + int(self.issued / per_us)
        self.loop.call_later(max((next_at - now) / 1e6, MIN_TICK), self._schedule)

    def _finish(self) -> None:
        if not self.running:
            return
        end = time.monotonic()
        self.running = False
        if self.recording:
            self.cpu_s = time.process_time() - self.cpu_start
            self._close_bucket(last=True)
            self.window = (self.window[0], end)
        self.recording = False
        # sent and not yet answered, or due and waiting for room or a connection (closed loop:
        # the last burst of every connection, as always; open loop: how far the server lags)
        self.unanswered = sum(c.inflight for c in self.conns if c.alive) + sum(len(c.backlog) for c in self.conns)
        for conn in self.conns:
            conn.alive = False  # from here on, replies, EOFs and resets are not counted
        self.progress[self.index] = self.done_before_window + self.done
        if not self.finished.done():
            self.finished.set_result(None)

    def report(self) -> dict:
        start, end = self.window
        return {
            "requests": self.done,
            "duration_s": max(0.0, end - start),
            "errors": dict(self.errors),
            "mismatches": self.mismatches,
            "unanswered": self.unanswered,
            "examples": list(self.examples),
            "hist": stats.encode(self.hist),
            "raw_hist": stats.encode(self.raw_hist) if self.open_loop else None,
            "timeline": self.timeline,
            "loop": loop_name(self.loop),
            "cpu_s": self.cpu_s,
        }


def worker_main(spec, index, connections, first_conn, quota, rate, pipe, go, t0, progress) -> None:
    """The worker process's entry point (spawned by the runner). Never raises: a failure is sent
    as ``("failed", reason)``."""
    try:
        # The hot path allocates only short-lived acyclic objects; the cyclic collector would
        # only add pauses (a gen-0 pass every 700 allocations) to the latencies we measure.
        gc.disable()
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        worker = Worker(spec, index, connections, first_conn, quota, rate)
        worker.loop = loop
        worker.progress = progress
        ready = loop.run_until_complete(worker.connect_all())
        ready.update(time_s=worker.connect_time, hist=stats.encode(worker.connect_hist), errors=dict(worker.errors),
                     prime_hist=stats.encode(worker.prime_hist) if spec.prime else None,
                     mismatches=worker.mismatches, examples=list(worker.examples))
        worker.errors.clear()  # counted once: the ready report carries the connect phase's
        worker.mismatches = 0
        worker.examples.clear()
        pipe.send(("ready", ready))
        if not go.wait(timeout=spec.connect_timeout + 60):
            return
        loop.run_until_complete(worker.run(t0.value))
        pipe.send(("done", worker.report()))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # reported as one line by the parent, never a traceback
        with contextlib.suppress(OSError):  # the parent may be gone (killed): nobody to tell
            pipe.send(("failed", f"{type(exc).__name__}: {exc}"))
