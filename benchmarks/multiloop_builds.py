"""multiloop (threads x loops) beside hybrid (processes x loops) and asyncio (one loop), on each
interpreter given, driven by one load generator (this interpreter's ``multiserve bench``).

Benchmark only (never a test). Every server gets ``--workers 2 --backlog 1024`` (hybrid keeps its
default process pool for CPU-bound calls: its correct configuration, not a strawman). Rounds are
interleaved (every interpreter x engine x service x connection count once per round); the table
gives medians, with the range over rounds. Server CPU is its process tree's (psutil), read over
the measured window (after the warm-up), and divided by the replies of that window.

    flock /tmp/multiserve-bench.lock .venv/bin/python benchmarks/multiloop_builds.py \\
        --python gil=.venv/bin/python --python ft=.venv-ft/bin/python --seconds 3 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

from multiserve.compare.launcher import TreeSampler

READY = re.compile(r"listening on 127\.0\.0\.1:(\d+) ")
GIL_PROBE = ("import sys, multiserve.engines.multiloop_engine, multiserve.engines.loops as l; "
             "l.new_event_loop(True); print(getattr(sys, '_is_gil_enabled', lambda: True)())")


def one_run(python, engine, service, connections, seconds, warmup):
    server = subprocess.Popen([python, "-m", "multiserve", "serve", "--engine", engine, "--service", service,
                               "--port", "0", "--workers", "2", "--backlog", "1024"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = READY.search(server.stdout.readline()).group(1)
        tree = TreeSampler(server.pid)
        bench = subprocess.Popen([sys.executable, "-m", "multiserve", "bench", f"127.0.0.1:{port}",
                                  "-c", str(connections), "-d", str(seconds), "--warmup", str(warmup),
                                  "--processes", "1", "--json", "-", "--quiet"],
                                 stdout=subprocess.PIPE, text=True)
        time.sleep(warmup + 0.3)  # the bench's start-up and connects, then its warm-up
        cpu0, t0 = tree.cpu_seconds(), time.monotonic()
        time.sleep(seconds - 0.3)
        cpu1, t1 = tree.cpu_seconds(), time.monotonic()
        result = json.loads(bench.communicate(timeout=seconds + 60)[0])
    finally:
        server.terminate()
        err = server.communicate(timeout=60)[1]
    gil = re.search(r"\(GIL (on|off)\)", err)
    return {"rps": result["rps"], "p99_us": result["latency_us"]["p99"],
            "errors": sum(result["outcomes"].values()),
            "cpu_us_per_request": 1e6 * (cpu1 - cpu0) / max(1.0, result["rps"] * (t1 - t0)),
            "cores": (cpu1 - cpu0) / (t1 - t0), "gil": gil.group(1) if gil else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--engines", default="multiloop,hybrid,asyncio")
    parser.add_argument("--services", default="upper,sleep:10,cpu:1")
    parser.add_argument("--connections", default="16,256")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write every run here")
    args = parser.parse_args()
    pythons = dict(item.split("=", 1) for item in args.python)
    engines, services = args.engines.split(","), args.services.split(",")
    counts = [int(c) for c in args.connections.split(",")]
    for name, path in pythons.items():
        probe = subprocess.run([path, "-c", GIL_PROBE], capture_output=True, text=True)
        version = subprocess.run([path, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True)
        print(f"# {name}: {path}, Python {version.stdout.strip()}, GIL enabled after the engine's imports: "
              f"{probe.stdout.strip() or probe.stderr.strip()[-200:]}", flush=True)
    runs = []
    for round_ in range(args.rounds):
        for service in services:
            for c in counts:
                for name, path in pythons.items():
                    for engine in engines:
                        r = one_run(path, engine, service, c, args.seconds, args.warmup)
                        r.update(python=name, engine=engine, service=service, connections=c, round=round_)
                        runs.append(r)
                        print(json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    print("\n| service | conns | python | engine | req/s median (range) | server CPU µs/req | cores used | p99 µs |")
    print("|---|---|---|---|---|---|---|---|")
    for service in services:
        for c in counts:
            for name in pythons:
                for engine in engines:
                    cell = [r for r in runs if (r["service"], r["connections"], r["python"], r["engine"]) == (service, c, name, engine)]
                    rps = [r["rps"] for r in cell]
                    print(f"| `{service}` | {c} | {name} | {engine} | {statistics.median(rps):,.0f} "
                          f"({min(rps):,.0f}-{max(rps):,.0f}) | {statistics.median(r['cpu_us_per_request'] for r in cell):.0f} "
                          f"| {statistics.median(r['cores'] for r in cell):.2f} | {statistics.median(r['p99_us'] for r in cell):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
