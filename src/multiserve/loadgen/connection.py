"""One client connection: an asyncio Protocol, not streams (a fifth less CPU per request: 9-10
against 12 µs for a uvloop server in ../shared/instruments/README.md).

Per reply the work is kept to what the C reference client does: one clock read per chunk, one
``bytes.startswith`` against the precomputed stream of expected replies, one dict update for the
latency, one ``write`` of a precomputed request. Anything unusual (a reply split across chunks, a
wrong reply, no check at all) takes the slow path, which parses line by line.

Send times are kept as runs ``[t_us, n]`` (closed loop: the n requests sent together at t_us) or
as ``(intended_us, actual_us)`` pairs (open loop: every request has its own intended time).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque

_now_ns = time.monotonic_ns


def now_us() -> int:
    """CLOCK_MONOTONIC in µs: the same clock in every worker process (Linux), so they share t0."""
    return _now_ns() // 1000


class LoadConnection(asyncio.Protocol):
    """Keeps ``worker.pipeline`` requests in flight (closed loop) or sends what the worker's
    scheduler ``offer``s (open loop), checks each reply, and reports to its ``worker``.

    The worker owns the life cycle: it connects (and reconnects) this protocol, calls ``start``
    when the run begins, and ends it with ``close_cleanly`` when the run ends.
    """

    def __init__(self, worker, index: int, slot: int):
        self.w = worker
        self.index = index
        self.slot = slot  # position in worker.conns (a reconnect puts a new protocol there)
        self.transport = None
        self.alive = False
        self.down = False  # its connect failed: it stays down for the rest of the run
        self.lost = None  # a future, set when the connection is gone (close_cleanly waits on it)
        self.sent = deque()  # closed loop: [t_us, n] runs; open loop: (intended_us, actual_us)
        self.backlog = deque()  # open loop: intended times waiting for room in the pipeline
        self.inflight = 0
        self.partial = b""
        # Each connection starts at its own place in the ring, so a reply delivered to the wrong
        # connection does not match either (7919: a prime, spreads 64 connections over the ring).
        start = (index * 7919) % worker.ring
        self.send_idx = start
        self.recv_pos = start * worker.line_len
        if worker.check and not worker.open_loop:
            self.data_received = self._data_closed
        elif worker.check:
            self.data_received = self._data_checked
        else:
            self.data_received = self._data_unchecked

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.alive = True

    def eof_received(self):
        self.w.connection_failed(self, "closed")
        return False  # let asyncio close the transport

    def connection_lost(self, exc):
        self.w.connection_failed(self, "closed" if exc is None else self.w.error_kind(exc))
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    async def close_cleanly(self, timeout: float) -> None:
        """End the connection as a well-behaved client does: shut down the sending side (the
        server sees EOF between requests, not a reset), read what it still sends (the replies in
        flight: the worker has ended, so they are not counted) until its EOF, then close. After
        ``timeout`` seconds without the server's EOF, abort. The EOF that answers ours is not
        counted as an error either: ``alive`` is set False here, not only by the worker's end,
        since a reconnect can complete after that end (``connection_made`` sets ``alive`` again)
        and be closed here before its ``_reconnect`` resumes to say the run is over."""
        self.alive = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.lost = asyncio.get_running_loop().create_future()
        try:
            transport.write_eof()
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        except (OSError, asyncio.TimeoutError):
            transport.abort()

    def successor(self) -> "LoadConnection":
        """A fresh protocol for the reconnect: same place in the ring, same backlog; the
        requests in flight were lost with this one."""
        new = type(self)(self.w, self.index, self.slot)
        new.send_idx = self.send_idx
        new.recv_pos = self.send_idx * self.w.line_len
        new.backlog = self.backlog
        return new

    # -- sending -----------------------------------------------------------------------------
    def start(self, now: int) -> None:
        w = self.w
        if w.open_loop:
            self._drain_backlog(now)
        else:
            self.send_closed(w.pipeline - self.inflight, now)

    def send_closed(self, k: int, now: int) -> None:
        w = self.w
        if not w.running or not self.alive:
            return
        if w.quota is not None and w.recording:
            k = min(k, w.quota)
            if k <= 0:
                w.quota_exhausted()
                return
            w.quota -= k
        idx = self.send_idx
        if k == 1:
            self.transport.write(w.reqs[idx])
        else:
            start = idx * w.line_len
            self.transport.write(w.req_stream[start : start + k * w.line_len])
        self.send_idx = (idx + k) % w.ring
        self.sent.append([now, k])
        self.inflight += k

    def offer(self, intended: int, now: int) -> None:
        """Open loop: send the request intended at ``intended`` now, or queue it if the
        pipeline is full (its latency still counts from ``intended``)."""
        if self.inflight < self.w.pipeline and self.alive:
            self._send_open(intended, now)
        else:
            self.backlog.append(intended)

    def _send_open(self, intended: int, now: int) -> None:
        w = self.w
        self.transport.write(w.reqs[self.send_idx])
        self.send_idx = (self.send_idx + 1) % w.ring
        self.sent.append((intended, now))
        self.inflight += 1

    def _drain_backlog(self, now: int) -> None:
        backlog = self.backlog
        limit = self.w.pipeline
        while backlog and self.inflight < limit and self.w.running and self.alive:
            self._send_open(backlog.popleft(), now)

    # -- receiving ---------------------------------------------------------------------------
    def _data_closed(self, data: bytes) -> None:
        """Closed loop, checked: the hot path. The common case (the chunk is exactly the
        expected replies to the last burst sent) is handled inline; anything else goes on to
        the general path below."""
        now = _now_ns() // 1000
        w = self.w
        pos = self.recv_pos
        sent = self.sent
        if self.partial or not sent or not w.rep_stream.startswith(data, pos) or data[-1] != 10:
            return self._completed(self._parse(data, check=True), now)
        n = len(data)
        k = n // w.line_len
        if k > self.inflight:  # more replies than requests: let the parser count the extra
            return self._completed(self._parse(data, check=True), now)
        run = sent[0]
        pos += n
        self.recv_pos = pos - w.stream_len if pos >= w.stream_len else pos
        if run[1] != k or w.quota is not None or not w.running:
            return self._completed(k, now)
        sent.popleft()
        if w.recording:
            w.done += k
            lat = w.lat
            d = now - run[0]
            lat[d] = lat.get(d, 0) + k
        # send the next k requests: the same burst again, one write
        idx = self.send_idx
        if k == 1:
            self.transport.write(w.reqs[idx])
        else:
            start = idx * w.line_len
            self.transport.write(w.req_stream[start : start + n])
        idx += k
        self.send_idx = idx - w.ring if idx >= w.ring else idx
        run[0] = now
        sent.append(run)

    def _data_checked(self, data: bytes) -> None:
        now = _now_ns() // 1000
        w = self.w
        pos = self.recv_pos
        if not self.partial and data[-1:] == b"\n" and w.rep_stream.startswith(data, pos):
            k = len(data) // w.line_len
            if k <= self.inflight:
                pos += len(data)
                self.recv_pos = pos - w.stream_len if pos >= w.stream_len else pos
                self._completed(k, now)
                return
        self._completed(self._parse(data, check=True), now)

    def _data_unchecked(self, data: bytes) -> None:
        now = _now_ns() // 1000
        self._completed(self._parse(data, check=False), now)

    def _parse(self, data: bytes, check: bool) -> int:
        """The slow path: split lines, compare each with its expected reply. Returns the number
        of replies that answered a request in flight (matched or not)."""
        w = self.w
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > w.max_reply:
            w.mismatch(self.partial[:80], None)
            self.partial = b""
        k = 0
        idx = self.recv_pos // w.line_len
        for line in lines:
            if k >= self.inflight:
                w.mismatch(line + b"\n", None)  # a reply nobody asked for
                continue
            if check:
                expected = w.reps[idx]
                if line + b"\n" != expected:
                    w.mismatch(line + b"\n", expected)
                idx += 1
                if idx == w.ring:
                    idx = 0
            k += 1
        self.recv_pos = idx * w.line_len
        return k

    def _completed(self, k: int, now: int, refill: bool = True) -> None:
        """``k`` replies arrived at ``now``: record their latencies (inside the window only),
        then refill the pipeline (closed loop) or send what waits in the backlog (open loop);
        ``refill=False``: record only, the connection is ending (an HTTP ``Connection: close``)."""
        if not k:
            return
        w = self.w
        self.inflight -= k
        recording = w.recording
        if recording:
            w.done += k
        if w.open_loop:
            self._pop_pairs(k, now, recording)
            if refill:
                self._drain_backlog(now)
        else:
            self._pop_runs(k, now, recording)
            if refill:
                self.send_closed(w.pipeline - self.inflight, now)
        if w.quota == 0:
            w.quota_exhausted()

    def _pop_runs(self, k: int, now: int, recording: bool) -> None:
        """Closed loop: the oldest ``k`` send times, kept as ``[t_us, n]`` runs."""
        sent, lat = self.sent, self.w.lat
        while k:
            run = sent[0]
            n = run[1]
            if n <= k:
                sent.popleft()
            else:
                run[1] = n - k
                n = k
            k -= n
            if recording:
                d = now - run[0]
                lat[d] = lat.get(d, 0) + n

    def _pop_pairs(self, k: int, now: int, recording: bool) -> None:
        """Open loop: both views, from the intended and from the actual send time."""
        sent, lat, raw = self.sent, self.w.lat, self.w.raw
        for _ in range(k):
            intended, actual = sent.popleft()
            if recording:
                d = now - intended
                lat[d] = lat.get(d, 0) + 1
                d = now - actual
                raw[d] = raw.get(d, 0) + 1
