"""The ticket office benchmark (docs/benchmarks.md): purchases/s per store, durable and not,
through servers and beside a raw single-connection loop measured in the same run.

    flock /tmp/multiserve-bench.lock .ci/services.sh \\
        .venv/bin/python -m multiserve.services.tickets.bench --engines asyncio threadpool

Each cell puts ``--buyers`` tickets on sale, so every buyer buys (each purchase is a real write),
and shows the median of ``--repeat`` runs.
"Raw" is one thread calling ``store.take`` in a loop on one connection: the store's own speed,
without network or server. Durability off means: sqlite ``synchronous=OFF``, json without fsync,
PostgreSQL ``synchronous_commit=off``, Redis ``appendfsync no``; never use those for real sales.
PostgreSQL and Redis come from MULTISERVE_TEST_POSTGRES_URL / MULTISERVE_TEST_REDIS_URL.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

from ...launch import ServerProcess
from ...stores import open_store
from .rush import rush


def store_urls(tmp: str, durable: bool) -> dict[str, str]:
    off = "" if durable else "?fsync=off"
    urls = {"sqlite": f"sqlite:{tmp}/t.db{off}", "json": f"json:{tmp}/data.json{off}"}
    if os.environ.get("MULTISERVE_TEST_POSTGRES_URL"):
        base = os.environ["MULTISERVE_TEST_POSTGRES_URL"]
        urls["postgres"] = base if durable else base + ("&" if "?" in base else "?") + "options=-csynchronous_commit%3Doff"
    if os.environ.get("MULTISERVE_TEST_REDIS_URL"):
        urls["redis"] = os.environ["MULTISERVE_TEST_REDIS_URL"]
    return urls


def set_redis_fsync(url: str, durable: bool) -> None:
    with open_store(url) as store:
        store.client.config_set("appendfsync", "always" if durable else "no")


def raw_loop(url: str, n: int) -> float:
    with open_store(url) as store:
        store.init(n, force=True)
        started = time.perf_counter()
        for i in range(n):
            store.take(f"raw-{i}")
        return n / (time.perf_counter() - started)


def through_server(url: str, engine: str, buyers: int, connections: int) -> tuple[float, list[str]]:
    with open_store(url) as store:
        store.init(buyers, force=True)
    # The one server harness of the package (multiserve.launch), not the test support on top of it.
    with ServerProcess([sys.executable, "-m", "multiserve", "serve", "--engine", engine, "--service", "tickets",
                        "--store", url, "--port", "0", "--log-level", "warning"]) as server:
        result = rush(url, buyers, via=[(server.host, server.port)], connections=connections)
    return result.count("ok") / result.seconds, result.problems


def redis_benchmark_incr(url: str, connections: int, n: int = 20000) -> float | None:
    parts = urlsplit(url)
    try:
        out = subprocess.run(["redis-benchmark", "-h", parts.hostname, "-p", str(parts.port or 6379),
                              "-c", str(connections), "-n", str(n), "-t", "incr", "-q"],
                             capture_output=True, text=True, timeout=60).stdout
    except FileNotFoundError:
        return None
    m = re.search(r"INCR: ([\d.]+) requests per second", out)
    return float(m.group(1)) if m else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["asyncio"])
    parser.add_argument("--buyers", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    args = parser.parse_args(argv)
    print("| store | fsync | raw loop, 1 conn | " + " | ".join(f"{e}, {args.connections} conns" for e in args.engines) + " |")
    print("|---|---|---|" + "---|" * len(args.engines))
    with tempfile.TemporaryDirectory(prefix="tickets-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        for durable in (True, False):
            for kind, url in store_urls(tmp, durable).items():
                if kind == "redis":
                    set_redis_fsync(url, durable)
                raw = statistics.median(raw_loop(url, args.buyers) for _ in range(args.repeat))
                cells = []
                for engine in args.engines:
                    runs = [through_server(url, engine, args.buyers, args.connections) for _ in range(args.repeat)]
                    problems = [p for _, ps in runs for p in ps]
                    rate = statistics.median(r for r, _ in runs)
                    cells.append(f"{rate:,.0f}" + (" (FAILED: " + "; ".join(problems) + ")" if problems else ""))
                print(f"| {kind} | {'on' if durable else 'off'} | {raw:,.0f} | " + " | ".join(cells) + " |", flush=True)
        redis_url = os.environ.get("MULTISERVE_TEST_REDIS_URL")
        if redis_url:
            set_redis_fsync(redis_url, True)
            for durable in (True, False):
                set_redis_fsync(redis_url, durable)
                incr = statistics.median(redis_benchmark_incr(redis_url, args.connections) or 0 for _ in range(args.repeat))
                print(f"redis-benchmark INCR, {args.connections} conns, appendfsync {'always' if durable else 'no'}: "
                      f"{incr:,.0f} requests/s" if incr else "redis-benchmark not available")
            set_redis_fsync(redis_url, True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
