"""What ``--metrics-port`` exports, counted without a lock or a shared write per request.

A *tally* is a flat array of integers (layout below) that one connection's session, or one
hybrid worker's event loop, adds to as it serves; a scrape (``snapshot()``) reads them, so the
cost of a request is a few integer additions on memory no other thread writes. Where the tallies
live depends on where sessions are served (:data:`METERS`):

``threads`` (thread, threadpool, gevent, asyncio, and any in-process engine): :class:`LocalMeter`.
    Each session owns a list; at its end it is added to the closed connections' total under a
    lock (once per connection, as ``ServeStats`` does). A scrape sums the total and the tallies of
    the open sessions. Each tally has one writer, the thread serving its connection, so this is
    also right on the free-threaded build (a scrape may read a count a few requests old).
``workers`` (hybrid): :class:`WorkerMeter`. One row per worker in anonymous shared memory made
    before the fork, claimed by the worker when it opens; the worker's loop thread is the row's
    only writer (plain 8-byte stores, as ``supervisor.slots``). The supervisor's scrape reads every
    row: the sums, and per worker (the ``worker`` label is the row index: stable over restarts,
    so its cardinality stays bounded). Rows are never reset, so counters never go down when a
    worker is replaced; a new owner only zeroes the open-connections gauge of a dead one.
``connection processes`` (process): :class:`ForkMeter`. One shared row, updated under a
    process-shared lock: each child serves one connection, and a fork per connection dwarfs a
    semaphore per request.

Request duration: from the moment the session has a complete request until its reply is ready to
write (the service's time plus the protocol's serialisation; a streamed body's pieces are not
included), bucketed by its bit length (powers-of-two bounds, below).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading

log = logging.getLogger(__name__)

# Histogram bounds: powers of two of nanoseconds, 2**13 ns (8.2 us: an in-memory service answers
# in tens of microseconds here, docs/benchmarks.md) to 2**33 ns (8.6 s: Prometheus' client default
# buckets end at 10 s). Powers of two because a request's bucket is then its duration's bit length
# (one int method and a tuple index: bisect over decimal bounds cost 2.8x as much, and a clock read
# already costs ~230 ns on the reference machine). A duration of exactly 2**k ns lands in the
# next bucket up (``le`` is "<=" in Prometheus): at nanosecond resolution, a negligible bias.
FIRST_POWER, LAST_POWER = 13, 33
BOUNDS_NS = tuple(1 << k for k in range(FIRST_POWER, LAST_POWER + 1))
BOUNDS_SECONDS = tuple(b / 1e9 for b in BOUNDS_NS)
# What ended a connection on an error (or, "service", a request whose handler raised).
ERROR_KINDS = ("protocol", "timeout", "tls", "io", "service")
# What became of a retiring hybrid worker's connections (engines.handoff): ``handed_off`` to a
# live worker, ``closed`` instead (TLS, not idle within --grace, no worker left to take it), and
# on the receiving side ``adopted``.
HANDOFF_OUTCOMES = ("handed_off", "adopted", "closed")

# The layout of a tally: OWNER (a worker's pid, shared rows only), OPEN (open connections, shared
# rows only), then the counters, the errors by kind, the hand-offs by outcome, the buckets (the
# last one is +Inf). Requests are the buckets' sum (one addition less per request).
OWNER, OPEN, CONNECTIONS, DURATION_NS = range(4)
ERRORS = 4
HANDOFFS = ERRORS + len(ERROR_KINDS)
BUCKETS = HANDOFFS + len(HANDOFF_OUTCOMES)
WIDTH = BUCKETS + len(BOUNDS_NS) + 1
KIND_INDEX = {kind: ERRORS + i for i, kind in enumerate(ERROR_KINDS)}
OUTCOME_INDEX = {outcome: HANDOFFS + i for i, outcome in enumerate(HANDOFF_OUTCOMES)}
# bit length of a duration (int64 nanoseconds) -> the index of its bucket in a tally (the last: +Inf)
SLOT_OF_BITS = tuple(BUCKETS + min(max(0, bits - FIRST_POWER), len(BOUNDS_NS)) for bits in range(65))


def new_tally() -> list:
    return [0] * WIDTH


def record(tally, ns: int, _slot=SLOT_OF_BITS) -> None:
    """One request answered in ``ns`` nanoseconds (by the tally's one writer). ObservedSession
    inlines this for the meters whose ``record`` it is (``lock_free``)."""
    tally[DURATION_NS] += ns
    tally[_slot[ns.bit_length()]] += 1


def requests(counts) -> int:
    """Requests answered: every request lands in one bucket."""
    return sum(counts[BUCKETS:WIDTH])


def error_kind(reason: str, protocol_error) -> str:
    """The ``kind`` label of a connection that ended on ``reason`` (the session's one log line)."""
    if protocol_error is not None and reason == protocol_error.reason:
        return "protocol"
    if reason.startswith("TLS handshake failed"):
        return "tls"
    if "timeout" in reason or "made no progress" in reason:
        return "timeout"
    return "io"


class Sample:
    """One scrape's view of a tally: ``counts`` (the layout above), ``open`` connections and the
    ``worker`` it belongs to (None when not per worker)."""

    __slots__ = ("counts", "open", "worker")

    def __init__(self, counts, open_connections: int, worker=None):
        self.counts = counts
        self.open = open_connections
        self.worker = worker


class LocalMeter:
    """Sessions served in this process, on any number of threads (see the module docstring)."""

    per_worker = False
    lock_free = True  # a tally's record needs no lock (its one writer)

    def __init__(self):
        self._lock = threading.Lock()
        self._closed = new_tally()
        self._live = set()

    record = staticmethod(record)

    def open(self) -> None:
        """In the serving process, before it serves (nothing to claim here)."""

    def opened(self, session) -> list:
        tally = new_tally()
        tally[CONNECTIONS] = 1
        with self._lock:
            self._live.add(session)
        return tally

    def error(self, tally, kind: str) -> None:
        tally[KIND_INDEX[kind]] += 1

    def moved(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self._closed[OUTCOME_INDEX[outcome]] += n

    def closed(self, session) -> None:
        tally = session.tally
        with self._lock:
            total = self._closed
            for i in range(CONNECTIONS, WIDTH):
                total[i] += tally[i]
            self._live.discard(session)

    def snapshot(self) -> list[Sample]:
        with self._lock:
            counts = list(self._closed)
            live = list(self._live)
            for session in live:
                tally = session.tally
                for i in range(CONNECTIONS, WIDTH):
                    counts[i] += tally[i]
        return [Sample(counts, len(live))]


class _SharedRows:
    """``rows`` tallies in anonymous shared memory (inherited by a fork), as 8-byte integers."""

    def __init__(self, rows: int):
        self._array = multiprocessing.RawArray("q", rows * WIDTH)
        self._view = memoryview(self._array).cast("B").cast("q")
        self.rows = rows

    def row(self, index: int):
        return self._view[index * WIDTH:(index + 1) * WIDTH]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerMeter:
    """Hybrid: a row per worker, written by that worker's loop thread, read by the supervisor."""

    per_worker = True
    lock_free = True

    def __init__(self, workers: int):
        # as many rows as the supervisor's slot table has slots (replacements overlap their
        # predecessors during a reload)
        self._rows = _SharedRows(max(64, 4 * workers))
        self._claim_lock = multiprocessing.Lock()
        self._row = None
        self._pid = 0

    record = staticmethod(record)

    def open(self) -> None:
        """In a worker, after the fork: claim a free row (or a dead worker's)."""
        pid = os.getpid()
        if self._pid == pid:
            return
        self._pid = pid
        with self._claim_lock:
            for index in range(self._rows.rows):
                row = self._rows.row(index)
                owner = row[OWNER]
                if owner == 0 or (owner != pid and not _alive(owner)):
                    row[OWNER] = pid
                    row[OPEN] = 0  # a dead owner's connections are gone
                    self._row = row
                    return
        log.warning("worker %d: no free metrics row; its counts are not exported", pid)
        self._row = new_tally()

    def opened(self, session):
        if self._pid != os.getpid():  # an engine that did not open the service in this process
            self.open()
        row = self._row
        row[CONNECTIONS] += 1
        row[OPEN] += 1
        return row

    def error(self, tally, kind: str) -> None:
        tally[KIND_INDEX[kind]] += 1

    def moved(self, outcome: str, n: int = 1) -> None:
        """Connections handed off, adopted or closed by this worker (on its loop thread, the
        row's one writer)."""
        if self._pid != os.getpid():
            self.open()
        self._row[OUTCOME_INDEX[outcome]] += n

    def closed(self, session) -> None:
        session.tally[OPEN] -= 1

    def snapshot(self) -> list[Sample]:
        samples = []
        for index in range(self._rows.rows):
            row = self._rows.row(index)
            owner = row[OWNER]
            if owner == 0:
                continue
            counts = row.tolist()
            samples.append(Sample(counts, counts[OPEN] if _alive(owner) else 0, worker=index))
        return samples


class ForkMeter:
    """The process engine: one shared row, every update under a process-shared lock."""

    per_worker = False
    lock_free = False

    def __init__(self):
        self._rows = _SharedRows(1)
        self._row = self._rows.row(0)
        self._lock = multiprocessing.Lock()

    def open(self) -> None:
        pass

    def opened(self, session):
        with self._lock:
            self._row[CONNECTIONS] += 1
            self._row[OPEN] += 1
        return self._row

    def record(self, tally, ns: int) -> None:
        with self._lock:
            record(tally, ns)

    def error(self, tally, kind: str) -> None:
        with self._lock:
            tally[KIND_INDEX[kind]] += 1

    def moved(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self._row[OUTCOME_INDEX[outcome]] += n

    def closed(self, session) -> None:
        with self._lock:
            self._row[OPEN] -= 1

    def snapshot(self) -> list[Sample]:
        counts = self._row.tolist()
        return [Sample(counts, counts[OPEN])]


# Where an engine serves its sessions -> the meter that counts them (engines not named: threads).
METERS = {"threads": LocalMeter, "workers": WorkerMeter, "connection processes": ForkMeter}


def make_meter(serves_in: str, workers: int = 1):
    cls = METERS[serves_in]
    return cls(workers) if cls is WorkerMeter else cls()
