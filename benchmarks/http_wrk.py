"""HTTP speed: multiserve's engines serving a WSGI or ASGI app beside gunicorn, uvicorn and granian, under wrk.

Benchmark only (never a test). Each server is pinned to core 0, wrk (Debian's package) to core 1;
the apps are examples/hello_wsgi.py and hello_asgi.py (``/`` answers ``hello``). Rounds are
interleaved: every server once per round, medians reported, and the ratios issue 12's goals name
computed within each round (servers measured side by side). The server's CPU is its whole
process tree's (psutil), read over the measured window. The peers are not dependencies of
multiserve: pass their executables (your own virtualenv, or ``pip install 'multiserve[peers]'``).

    .venv/bin/pip install gunicorn gevent 'uvicorn[standard]' granian
    flock /tmp/multiserve-bench.lock .venv/bin/python benchmarks/http_wrk.py \\
        --gunicorn .venv/bin/gunicorn --uvicorn .venv/bin/uvicorn --granian .venv/bin/granian \\
        --seconds 3 --rounds 3
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

from multiserve.compare.launcher import TreeSampler

APP = "examples.hello_wsgi:app"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ASGI_APP = "examples.hello_asgi:app"


def servers(gunicorn: str | None, uvicorn: str | None, granian: str | None) -> dict:
    ms = [sys.executable, "-m", "multiserve", "serve", "--protocol", "http", "--log-level", "warning"]

    def hybrid(n):
        return ["--workers", str(n), "--cpu-workers", "0"]

    table = {f"multiserve {e} WSGI": ms + ["--app", APP, "--engine", e] + (hybrid(1) if e == "hybrid" else [])
             for e in ("asyncio", "hybrid", "threadpool", "thread", "gevent", "process")}
    table["multiserve hybrid 2 workers WSGI"] = ms + ["--app", APP, "--engine", "hybrid"] + hybrid(2)
    table["multiserve asyncio ASGI"] = ms + ["--app", ASGI_APP, "--engine", "asyncio"]
    table["multiserve hybrid ASGI"] = ms + ["--app", ASGI_APP, "--engine", "hybrid"] + hybrid(1)
    table["multiserve hybrid 2 workers ASGI"] = ms + ["--app", ASGI_APP, "--engine", "hybrid"] + hybrid(2)
    if uvicorn:
        table["uvicorn (httptools, uvloop) ASGI"] = [uvicorn, "--http", "httptools", "--loop", "uvloop",
                                                     "--log-level", "warning", "--no-access-log", ASGI_APP]
    if gunicorn:
        g = [gunicorn, "--log-level", "warning", "-w", "1"]
        table["gunicorn gthread 1x32"] = g + ["-k", "gthread", "--threads", "32", APP]
        table["gunicorn gevent"] = g + ["-k", "gevent", APP]
        table["gunicorn sync"] = g + ["-k", "sync", APP]
    if granian:
        # one worker, HTTP/1 only, no websockets: the same job as the others; granian's defaults
        # otherwise (its runtime threads, blocking threads and loop)
        gr = [granian, "--log-level", "warning", "--no-access-log", "--workers", "1", "--http", "1", "--no-ws"]
        table["granian ASGI"] = gr + ["--interface", "asgi", ASGI_APP]
        table["granian WSGI"] = gr + ["--interface", "wsgi", APP]
    return table


# issue 12's goals: (name, numerator, denominator, the bound on CPU per request's ratio)
GOALS = [
    ("asyncio ASGI / uvicorn", "multiserve asyncio ASGI", "uvicorn (httptools, uvloop) ASGI", 1.0),
    ("asyncio ASGI / granian ASGI", "multiserve asyncio ASGI", "granian ASGI", 1.0),
    ("threadpool WSGI / gunicorn gthread", "multiserve threadpool WSGI", "gunicorn gthread 1x32", 1.0),
    ("gevent WSGI / gunicorn gevent", "multiserve gevent WSGI", "gunicorn gevent", 1.0),
] + [(f"{e} WSGI / granian WSGI", f"multiserve {e} WSGI", "granian WSGI", 2.0)
     for e in ("asyncio", "hybrid", "threadpool", "thread", "gevent", "process")]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"no server on port {port}")


def run_one(name: str, cmd: list, seconds: float, connections: int) -> dict:
    port = free_port()
    if cmd[0].endswith("gunicorn"):
        cmd = cmd[:-1] + ["-b", f"127.0.0.1:{port}", cmd[-1]]
    elif cmd[0].endswith(("uvicorn", "granian")):
        cmd = cmd[:-1] + ["--host", "127.0.0.1", "--port", str(port), cmd[-1]]
    else:
        cmd = cmd + ["--port", str(port)]
    server = subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}/"
        wrk = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}"]
        subprocess.run([*wrk, "-d1s", url], capture_output=True, timeout=30)  # warm-up
        tree = TreeSampler(server.pid)
        cpu0 = tree.cpu_seconds()
        out = subprocess.run([*wrk, f"-d{seconds:g}s", url], capture_output=True, text=True, timeout=seconds + 30).stdout
        cpu1 = tree.cpu_seconds()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockerr = re.search(r"Socket errors: (.*)", out)
    return {"name": name, "rps": rps, "cpu_us": (cpu1 - cpu0) / max(total, 1) * 1e6,
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": sockerr.group(1) if sockerr else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gunicorn", help="path of a gunicorn executable (a separate virtualenv)")
    parser.add_argument("--uvicorn", help="path of a uvicorn executable (the same virtualenv, with httptools and uvloop)")
    parser.add_argument("--granian", help="path of a granian executable (a separate virtualenv)")
    parser.add_argument("--json", help="write every round's results to this file")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", help="comma-separated server names (substrings)")
    args = parser.parse_args()
    table = servers(args.gunicorn, args.uvicorn, args.granian)
    if args.only:
        table = {k: v for k, v in table.items() if any(s in k for s in args.only.split(","))}
    results: dict[str, list] = {name: [] for name in table}
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", file=sys.stderr, flush=True)
    for r in range(args.rounds):
        for name, cmd in table.items():
            res = run_one(name, cmd, args.seconds, args.connections)
            results[name].append(res)
            print(f"round {r + 1} {name}: {res['rps']:.0f} req/s {res['cpu_us']:.1f} us/req "
                  f"non2xx={res['non2xx']} {res['socket_errors']}", file=sys.stderr, flush=True)
    print(f"| server | req/s | server CPU µs/request | non-2xx | socket errors |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        rps = statistics.median(x["rps"] for x in runs)
        cpu = statistics.median(x["cpu_us"] for x in runs)
        non2xx = sum(x["non2xx"] for x in runs)
        errs = "; ".join(x["socket_errors"] for x in runs if x["socket_errors"]) or "0"
        print(f"| {name} | {rps / 1000:.1f}k | {cpu:.1f} | {non2xx} | {errs} |")
    print()
    print("| server CPU µs/request ratio | " + " | ".join(f"round {r + 1}" for r in range(args.rounds)) + " | goal |")
    print("|---|" + "---|" * (args.rounds + 1))
    for label, top, bottom, bound in GOALS:
        if top in results and bottom in results:
            ratios = [a["cpu_us"] / b["cpu_us"] for a, b in zip(results[top], results[bottom])]
            print(f"| {label} | " + " | ".join(f"{x:.2f}" for x in ratios) + f" | <= {bound:g} |")
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
