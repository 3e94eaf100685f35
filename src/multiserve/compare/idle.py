"""``--idle-connections N``: the C10K question, one engine at a time.

Open up to N connections that send nothing, then check that a fresh client is still answered
(and how fast), then send one request on every idle connection and count those answered: that
count is what the server *held* (a connection still waiting in the listen backlog looks open to
the client but is not served). Server memory per connection is the growth of its process tree's
memory divided by the connections held.

Opening stops early, and says why, when a connect fails, the server dies, the machine's free
memory runs low (a process-per-connection server forks N interpreters) or the time budget ends.
"""
from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import time

import psutil

from .launcher import Server, ServerFailed, TreeSampler, engine_command

BATCH = 250  # connections opened between two checks of memory, time and server health
CONNECT_TIMEOUT = 5.0
# Stop opening when the machine has less free memory than this: other work shares the machine,
# and the process engine costs ~1.6 MiB (PSS) per connection (measured here at 200), so 10,000
# would take 16 GiB; children keep touching pages after the check, hence the wide margin.
MIN_AVAILABLE_BYTES = max(8 * 1024**3, psutil.virtual_memory().total // 3)
OPEN_BUDGET_S = 60.0  # at most this long spent opening connections, per engine
FRESH_TIMEOUT = 10.0  # a fresh client not answered within this is reported as not served
# Answering every held connection once: 30 s plus 1 ms per connection leaves a slow
# thread-per-connection server room at 10,000 (it wakes 10,000 threads).
PING_BASE_S = 30.0
PING_PER_CONN_S = 0.001


def raise_open_file_limit() -> dict:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit (servers started later inherit it).
    Returns ``{"before": soft, "after": soft, "hard": hard}``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return {"before": soft, "after": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "hard": hard}


def _tree_pss(sampler: TreeSampler) -> int:
    """Proportional set size of the tree: shared pages split between the processes sharing
    them, so forked children are not charged for the parent's pages again."""
    total = 0
    for proc in sampler.tree():
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss
    return total


def _open(server: Server, sampler: TreeSampler, target: int, socks: list) -> str:
    """Open connections until ``target``; returns why it stopped early, or ''."""
    started = time.monotonic()
    while len(socks) < target:
        for _ in range(min(BATCH, target - len(socks))):
            try:
                socks.append(socket.create_connection((server.host, server.port), timeout=CONNECT_TIMEOUT))
            except OSError as exc:
                return f"connect #{len(socks) + 1} failed: {exc}"
        if not server.alive():
            return f"server died: {server.stderr_tail()}"
        if psutil.virtual_memory().available < MIN_AVAILABLE_BYTES:
            return f"stopped at {len(socks)}: the machine's free memory fell below {MIN_AVAILABLE_BYTES >> 30} GiB"
        if time.monotonic() - started > OPEN_BUDGET_S:
            return f"stopped at {len(socks)}: opening took over {OPEN_BUDGET_S:.0f}s"
        sampler.sample()
    return ""


def _fresh_client(server: Server, timeout: float) -> float | None:
    """Milliseconds for a new client to connect and get its answer; None if it was not served."""
    started = time.monotonic()
    try:
        with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
            sock.sendall(b"fresh\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(64)
                if not chunk or time.monotonic() - started > timeout:
                    return None
                reply += chunk
    except OSError:
        return None
    return (time.monotonic() - started) * 1000 if reply == b"FRESH\n" else None


def _ping_all(socks: list, base_timeout: float) -> int:
    """Send one request on every socket; count the right answers within the deadline."""
    selector = selectors.DefaultSelector()
    pending = {}
    for sock in socks:
        try:
            sock.setblocking(False)
            sock.send(b"ping\n")  # 5 bytes always fit an empty send buffer
        except OSError:
            continue
        pending[sock] = b""
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + base_timeout + PING_PER_CONN_S * len(socks)
    held = 0
    while pending and (left := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(left):
            sock = key.fileobj
            try:
                chunk = sock.recv(64)
            except OSError:
                chunk = b""
            got = pending[sock] + chunk
            if chunk and not got.endswith(b"\n"):
                pending[sock] = got
                continue
            held += got == b"PING\n"
            selector.unregister(sock)
            del pending[sock]
    selector.close()
    return held


def _per_conn(grown_bytes: int, count: int) -> float | None:
    return grown_bytes / 1024 / count if count else None


def idle_check(engine: str, target: int, service: str = "upper", *, server_args=(),
               fresh_timeout: float = FRESH_TIMEOUT, ping_timeout: float = PING_BASE_S) -> dict:
    """Hold up to ``target`` idle connections on ``engine``; see the module docstring.

    ``server_args`` are extra ``multiserve serve`` options; the timeouts bound how long a fresh
    client and the pings (plus 1 ms per connection) may wait for their answers.

    Memory is measured twice. *Idle*: once the fresh client is answered (the listen queue is
    first in, first out, so every connection opened before it has been accepted by then), the
    tree's growth over the connections opened. *After a request*: once the pings are answered,
    the growth over the connections held. RSS and PSS (which splits pages shared by forked
    processes) both. Returns ``{"engine", "target", "opened", "held", "stopped", "fresh_ms",
    "idle_rss_kib_per_conn", "idle_pss_kib_per_conn", "used_rss_kib_per_conn",
    "used_pss_kib_per_conn", "rss_kib_before", "rss_kib_after", "status", "reason"}``.
    """
    row = {"engine": engine, "target": target, "opened": 0, "held": 0, "stopped": "", "fresh_ms": None,
           "idle_rss_kib_per_conn": None, "idle_pss_kib_per_conn": None, "used_rss_kib_per_conn": None,
           "used_pss_kib_per_conn": None, "rss_kib_before": None, "rss_kib_after": None,
           "status": "failed", "reason": ""}
    stop_failed = ""
    socks: list[socket.socket] = []
    try:
        with Server(engine_command(engine, service, *server_args)) as server:
            sampler = TreeSampler(server.pid)
            rss0, pss0 = sampler.sample(), _tree_pss(sampler)
            row["rss_kib_before"] = rss0 // 1024
            try:
                row["stopped"] = _open(server, sampler, target, socks)
                row["opened"] = len(socks)
                row["fresh_ms"] = _fresh_client(server, fresh_timeout)
                if row["fresh_ms"] is not None:
                    row["idle_rss_kib_per_conn"] = _per_conn(sampler.sample() - rss0, len(socks))
                    row["idle_pss_kib_per_conn"] = _per_conn(_tree_pss(sampler) - pss0, len(socks))
                row["held"] = _ping_all(socks, ping_timeout)
                rss1 = sampler.sample()
                row["rss_kib_after"] = rss1 // 1024
                row["used_rss_kib_per_conn"] = _per_conn(rss1 - rss0, row["held"])
                row["used_pss_kib_per_conn"] = _per_conn(_tree_pss(sampler) - pss0, row["held"])
            finally:
                for sock in socks:
                    sock.close()
            try:
                server.stop()
            except ServerFailed as exc:
                stop_failed = str(exc)
    except ServerFailed as exc:  # it never started
        row["reason"] = str(exc)
        return row
    problems = []
    if row["held"] < target:
        problems.append(f"held {row['held']} of {target}" + (f" ({row['stopped']})" if row["stopped"] else ""))
    if row["fresh_ms"] is None:
        problems.append("a fresh client was not served")
    if stop_failed:
        problems.append(stop_failed)
    row["status"] = "failed" if problems else "ok"
    row["reason"] = "; ".join(problems)
    return row
