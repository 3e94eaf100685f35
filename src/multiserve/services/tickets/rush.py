"""The rush: N buyers each QUERY then BUY, through servers or straight at the store, recorded
and checked the way Jepsen checks a history.

Each attempt is an :class:`Op` of one of three types:

``ok``    ``SOLD`` received: the sale happened and must be in the ledger.
``fail``  ``SOLDOUT``, an ``ERR``, or the BUY was never sent: surely not sold.
``info``  the BUY was sent and no answer came (connection lost, timeout), or the server answered
          ``ERR unknown outcome ...`` (its store failed mid-sale): it may or may not have sold.

:func:`verify` compares the history with the store's ledger before and after: every ``ok`` is in
the ledger under its buyer, the number sold lies between #ok and #ok + #info, no ticket is sold
twice, and the store's own invariants hold.

Buyers are spread over ``processes`` (spawned, so a rush never forks a threaded parent) and,
within a process, over threads that each keep one connection and serve buyers in turn, so
``connections`` bounds the concurrency the server sees.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import multiprocessing
import socket
import threading
import time

from ...loadgen.errors import error_kind
from ...stores import Snapshot, open_store, violations
from ...stores.base import file_store_path

# 32 connections: the benchmark figure (2,000 buyers over 32 connections).
DEFAULT_CONNECTIONS = 32
# 30 s: the server's default --request-timeout; a reply slower than that counts as lost (info).
REPLY_TIMEOUT_SECONDS = 30.0
# 10 ms: in the tutorial's naive buyer, long enough that concurrent buyers read the same count.
UNSAFE_PAUSE_SECONDS = 0.01


def buyer_name(i: int) -> str:
    """The i-th buyer's name, as the seed tutorial names its buyers: non-ASCII on purpose, so every
    rush also checks that names travel and are stored as UTF-8."""
    return f"用户{i}#号"


@dataclasses.dataclass(frozen=True)
class Op:
    """One buyer's attempt. ``error`` is the kind of what went wrong ("" for SOLD and SOLDOUT):
    a socket error's kind (``refused``, ``reset``, ``timeout``: :func:`~multiserve.loadgen.errors.error_kind`),
    ``closed`` (the server closed the connection), ``ERR`` (the server refused the request),
    ``unknown outcome`` (its store failed mid-sale), ``bad reply``, or ``store`` (straight at
    the store). ``answered``: a server (or the store) replied at all."""

    buyer: str
    type: str  # "ok" | "fail" | "info"
    ticket: int | None = None
    detail: str = ""
    error: str = ""
    answered: bool = True


@dataclasses.dataclass
class RushResult:
    ops: list[Op]
    seconds: float
    before: Snapshot
    after: Snapshot
    problems: list[str]

    def count(self, kind: str) -> int:
        return sum(1 for op in self.ops if op.type == kind)

    @property
    def sold(self) -> int:
        """Tickets that left the inventory during the rush."""
        return self.before.left - self.after.left

    @property
    def oversold(self) -> int:
        """Buyers told SOLD beyond the tickets that left the inventory (the unsafe race)."""
        return max(0, self.count("ok") - self.sold)

    @property
    def errors_by_kind(self) -> dict[str, int]:
        return dict(collections.Counter(op.error for op in self.ops if op.error))

    @property
    def answered(self) -> int:
        """Attempts that got any reply: 0 means no server answered (none there, or all down)."""
        return sum(1 for op in self.ops if op.answered)

    def summary(self) -> dict:
        soldout = sum(1 for op in self.ops if op.type == "fail" and op.detail == "SOLDOUT")
        by_kind = self.errors_by_kind
        return {
            "buyers": len(self.ops), "ok": self.count("ok"), "fail": self.count("fail"),
            "info": self.count("info"), "soldout": soldout,
            "errors": sum(by_kind.values()), "errors_by_kind": by_kind, "answered": self.answered,
            "sold": self.sold, "left": self.after.left, "initial": self.after.initial,
            "oversold": self.oversold, "seconds": round(self.seconds, 4),
            "purchases_per_s": round(self.count("ok") / self.seconds, 1) if self.seconds > 0 else None,
            "problems": self.problems,
        }


# -- one buyer, three ways ------------------------------------------------------------------------

class ServerBuyer:
    """One connection to a server, reused buyer after buyer, reopened after a failure."""

    def __init__(self, address: tuple[str, int]):
        self.address = address
        self.sock = None
        self.reader = None

    def _line(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        return self.reader.readline()

    def _drop(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = self.reader = None

    def buy(self, buyer: str) -> Op:
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.address, timeout=REPLY_TIMEOUT_SECONDS)
                self.reader = self.sock.makefile("rb")
            left = self._line(b"QUERY\n")
        except OSError as exc:
            self._drop()
            return Op(buyer, "fail", detail=f"before BUY: {type(exc).__name__}", error=error_kind(exc),
                      answered=False)
        if not left.startswith(b"LEFT "):
            self._drop()
            if not left:
                return Op(buyer, "fail", detail="QUERY: connection closed", error="closed", answered=False)
            kind = "ERR" if left.startswith(b"ERR ") else "bad reply"
            return Op(buyer, "fail", detail=f"QUERY answered {left[:60]!r}", error=kind)
        try:
            reply = self._line(b"BUY %s\n" % buyer.encode("utf-8"))
        except OSError as exc:
            self._drop()
            return Op(buyer, "info", detail=f"BUY sent, then {type(exc).__name__}", error=error_kind(exc),
                      answered=False)
        return classify(buyer, reply, self._drop)

    def close(self):
        self._drop()


def classify(buyer: str, reply: bytes, on_lost) -> Op:
    parts = reply.split()
    if len(parts) == 3 and parts[0] == b"SOLD" and parts[2].decode("utf-8", "replace") == buyer:
        return Op(buyer, "ok", int(parts[1]))
    if reply == b"SOLDOUT\n":
        return Op(buyer, "fail", detail="SOLDOUT")
    text = reply.decode("utf-8", "replace").strip()
    if reply.startswith(b"ERR unknown outcome"):
        return Op(buyer, "info", detail=text, error="unknown outcome")
    if reply.startswith(b"ERR "):
        return Op(buyer, "fail", detail=text, error="ERR")
    on_lost()
    if not reply:
        return Op(buyer, "info", detail="BUY sent, connection lost", error="closed", answered=False)
    return Op(buyer, "info", detail=f"BUY answered {reply[:60]!r}", error="bad reply")


class StoreBuyer:
    """Straight at the store: the same operations the server performs, without the network."""

    def __init__(self, store):
        self.store = store

    def buy(self, buyer: str) -> Op:
        try:
            self.store.left()
        except Exception as exc:
            return Op(buyer, "fail", detail=f"QUERY: {exc}", error="store", answered=False)
        try:
            ticket = self.store.take(buyer)
        except Exception as exc:
            return Op(buyer, "info", detail=f"BUY: {exc}", error="store", answered=False)
        return Op(buyer, "ok", ticket) if ticket is not None else Op(buyer, "fail", detail="SOLDOUT")

    def close(self):
        pass


class UnsafeBuyer:
    """The tutorial's read-pause-write on the JSON file, without any lock."""

    def __init__(self, path: str, pause: float):
        self.path = path
        self.pause = pause

    def buy(self, buyer: str) -> Op:
        from ...stores.jsonfile import unsafe_buy

        try:
            ticket = unsafe_buy(self.path, buyer, self.pause)
        except Exception as exc:
            return Op(buyer, "info", detail=f"BUY: {type(exc).__name__}: {exc}", error=type(exc).__name__,
                      answered=False)
        return Op(buyer, "ok", ticket) if ticket is not None else Op(buyer, "fail", detail="SOLDOUT")

    def close(self):
        pass


# -- running the buyers -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Part:
    """What one process runs: its buyers, its threads, and where they buy."""

    store_url: str
    buyers: tuple[str, ...]
    threads: int
    via: tuple[tuple[str, int], ...]
    first_thread: int  # this part's threads are spread over ``via`` after the previous parts'
    unsafe: bool
    pause: float


def run_part(part: Part, observe=None) -> list[Op]:
    """Run one process's buyers; ``observe(op)``, if given, is called from the threads as ops end."""
    names = iter(part.buyers)
    names_lock = threading.Lock()
    ops: list[Op] = []
    store = open_store(part.store_url) if not part.via and not part.unsafe else None

    def make_buyer(index: int):
        if part.unsafe:
            return UnsafeBuyer(file_store_path(part.store_url)[0], part.pause)
        if part.via:
            return ServerBuyer(part.via[(part.first_thread + index) % len(part.via)])
        return StoreBuyer(store)

    def work(index: int):
        buyer = make_buyer(index)
        try:
            while True:
                with names_lock:
                    name = next(names, None)
                if name is None:
                    return
                op = buyer.buy(name)
                ops.append(op)  # list.append is atomic under the GIL
                if observe is not None:
                    observe(op)
        finally:
            buyer.close()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(part.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if store is not None:
        store.close()
    return ops


def rush(store_url: str, buyers: int, *, via=(), processes: int = 1, connections: int = DEFAULT_CONNECTIONS,
         unsafe: bool = False, pause: float = UNSAFE_PAUSE_SECONDS, observe=None) -> RushResult:
    """Run the rush and verify it; see the module docstring. ``via`` holds (host, port) pairs.

    ``observe`` (only with ``processes=1``) is called with each Op as it ends. Raises StoreError
    when the store cannot be read before or after, ValueError for impossible arguments.
    """
    if unsafe and (via or not store_url.startswith("json:")):
        raise ValueError("--unsafe runs the tutorial's naive buyer straight against a json: store (no --via)")
    if observe is not None and processes != 1:
        raise ValueError("observe needs processes=1")
    processes = max(1, min(processes, buyers))
    connections = max(processes, min(connections, buyers))
    names = [buyer_name(i) for i in range(buyers)]
    parts, first = [], 0
    for p in range(processes):
        threads = connections // processes + (1 if p < connections % processes else 0)
        parts.append(Part(store_url, tuple(names[p::processes]), threads, tuple(via), first, unsafe, pause))
        first += threads
    with open_store(store_url) as store:
        before = store.snapshot()
    started = time.perf_counter()
    if processes == 1:
        ops = run_part(parts[0], observe)
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            ops = list(itertools.chain.from_iterable(pool.map(run_part, parts)))
    seconds = time.perf_counter() - started
    with open_store(store_url) as store:
        after = store.snapshot()
    return RushResult(ops, seconds, before, after, verify(before, after, ops))


def verify(before: Snapshot, after: Snapshot, ops: list[Op]) -> list[str]:
    """The invariants of a rush, as one line each; empty when the history is sound."""
    problems = []
    ok = [op for op in ops if op.type == "ok"]
    info = sum(1 for op in ops if op.type == "info")
    ledger = set(after.sales)
    missing = [op for op in ok if (op.ticket, op.buyer) not in ledger]
    if missing:
        first = ", ".join(f"#{op.ticket} {op.buyer}" for op in missing[:3])
        problems.append(f"{len(missing)} acknowledged sales missing from the ledger (first: {first})")
    counts: dict[int, int] = {}
    for op in ok:
        counts[op.ticket] = counts.get(op.ticket, 0) + 1
    twice = sorted(n for n, c in counts.items() if c > 1)
    if twice:
        problems.append(f"{len(twice)} tickets acknowledged to more than one buyer (first: {twice[:5]})")
    sold = before.left - after.left
    if not len(ok) <= sold <= len(ok) + info:
        problems.append(f"sold {sold} is outside [#ok {len(ok)}, #ok + #info {len(ok) + info}]")
    problems.extend(violations(after))
    return problems
