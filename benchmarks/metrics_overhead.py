"""What ``--metrics-port`` (and ``--access-log``) cost under load: req/s and server CPU per request.

For each round, each engine, each variant (interleaved: every variant once per round), a fresh
server on port 0, ``multiserve bench`` against it (``upper``, C connections, 1 s warm-up, D s
measured), then SIGTERM. Server CPU is its process tree's user+system time from ready to stop,
over the requests its ``stopped:`` line counts (warm-up included in both). The metrics variant is
scraped once a second during the load, as Prometheus would be (its cost is in the figure).

    flock /tmp/multiserve-bench.lock .venv/bin/python benchmarks/metrics_overhead.py \\
        --engines asyncio,threadpool --rounds 5 --duration 3 --connections 16

``--rate R``: an open-loop load of R requests/s instead of as many as the server takes, so every
variant serves the same load shape (at saturation, CPU per request also moves with how many
requests each wake-up finds); the server CPU per request is then the figure to compare.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import psutil

from multiserve.compare.launcher import TreeSampler
from multiserve.launch import ServerProcess

VARIANTS = {
    "off": [],
    "metrics": ["--metrics-port", "0"],
    "access-log": ["--access-log", "/dev/null"],
}
STOPPED = re.compile(r"stopped: connections=(\d+) requests=(\d+)")


def one(engine: str, variant: str, args) -> dict:
    cmd = [sys.executable, "-m", "multiserve", "serve", "--engine", engine, "--port", "0", *VARIANTS[variant]]
    server_pin, bench_pin = (["taskset", "-c", "0"], ["taskset", "-c", "1"]) if args.pin else ([], [])
    cmd = server_pin + cmd
    with ServerProcess(cmd) as srv:
        tree = TreeSampler(srv.pid)
        metrics = re.search(rb"metrics=(\S+)", srv.stdout_seen)
        done = threading.Event()

        def scrape():
            while not done.wait(1.0):
                urllib.request.urlopen(f"http://{metrics.group(1).decode()}/metrics", timeout=5).read()

        scraper = threading.Thread(target=scrape, daemon=True) if metrics else None
        cpu0 = tree.cpu_seconds()
        if scraper:
            scraper.start()
        rate = ["--rate", str(args.rate)] if args.rate else []
        bench = subprocess.run([*bench_pin, sys.executable, "-m", "multiserve", "bench", f"{srv.host}:{srv.port}", "-c",
                                str(args.connections), "-d", str(args.duration), "--warmup", "1", "--json", "-",
                                "--quiet", *rate], capture_output=True, text=True, timeout=120)
        done.set()
        cpu1 = tree.cpu_seconds()
        assert srv.terminate(30) == 0, srv.stderr_text()[-2000:]
        served = int(STOPPED.search(srv.stderr_text()).group(2))
        result = json.loads(bench.stdout)
        return {"engine": engine, "variant": variant, "rps": result["rps"],
                "cpu_us_per_request": (cpu1 - cpu0) / served * 1e6, "served": served}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", default="asyncio,threadpool")
    p.add_argument("--variants", default="off,metrics")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--rate", type=int, default=0, help="open loop: total requests/s (0: closed loop, saturating)")
    p.add_argument("--pin", action="store_true",
                   help="server on core 0, load generator on core 1 (taskset): the server saturates its own core")
    p.add_argument("--json", help="write every run here")
    args = p.parse_args()
    runs = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = psutil.getloadavg()
    for r in range(args.rounds):
        for engine in args.engines.split(","):
            for variant in args.variants.split(","):
                run = one(engine, variant, args)
                run["round"] = r
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
    load1 = psutil.getloadavg()
    print(f"{started}; load average (1 min) {load0[0]:.1f} at start, {load1[0]:.1f} at end")
    print("| engine | variant | req/s (median) | vs off, per round (median [min, max]) | server CPU µs/req | vs off |")
    print("|---|---|---|---|---|---|")
    for engine in args.engines.split(","):
        base = {x["round"]: x for x in runs if x["engine"] == engine and x["variant"] == "off"}
        for variant in args.variants.split(","):
            mine = [x for x in runs if x["engine"] == engine and x["variant"] == variant]
            rps = statistics.median(x["rps"] for x in mine)
            cpu = statistics.median(x["cpu_us_per_request"] for x in mine)
            ratios = [x["rps"] / base[x["round"]]["rps"] for x in mine]
            cpu_ratio = cpu / statistics.median(x["cpu_us_per_request"] for x in base.values())
            print(f"| {engine} | {variant} | {rps:,.0f} | {statistics.median(ratios):.3f} "
                  f"[{min(ratios):.3f}, {max(ratios):.3f}] | {cpu:.1f} | {cpu_ratio:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
