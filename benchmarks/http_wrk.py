"""HTTP speed: multiserve's engines serving a WSGI app beside gunicorn's workers, under wrk.

Benchmark only (never a test). Each server is pinned to core 0, wrk (Debian's package) to core 1;
the apps are examples/hello_wsgi.py and hello_asgi.py (``/`` answers ``hello``). Rounds are interleaved: every server
once per round, medians reported. The server's CPU is its whole process tree's (psutil), read
over the measured window. gunicorn and uvicorn are not dependencies of multiserve: pass their
paths in a separate virtualenv ($PEERS: a folder of your choice; gunicorn with gevent, uvicorn
with httptools and uvloop).

    python3 -m venv "$PEERS" && "$PEERS"/bin/pip install gunicorn gevent packaging uvicorn httptools uvloop
    flock /tmp/multiserve-bench.lock .venv/bin/python benchmarks/http_wrk.py \\
        --gunicorn "$PEERS"/bin/gunicorn --uvicorn "$PEERS"/bin/uvicorn --seconds 3 --rounds 3
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

import psutil

APP = "examples.hello_wsgi:app"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ASGI_APP = "examples.hello_asgi:app"


def servers(gunicorn: str | None, uvicorn: str | None) -> dict:
    ms = [sys.executable, "-m", "multiserve", "serve", "--protocol", "http", "--log-level", "warning"]
    hybrid = ["--workers", "1", "--cpu-workers", "0"]
    table = {f"multiserve {e} WSGI": ms + ["--app", APP, "--engine", e] + (hybrid if e == "hybrid" else [])
             for e in ("asyncio", "hybrid", "threadpool", "thread", "gevent", "process")}
    for e in ("asyncio", "hybrid"):
        table[f"multiserve {e} ASGI"] = ms + ["--app", ASGI_APP, "--engine", e] + (hybrid if e == "hybrid" else [])
    if uvicorn:
        table["uvicorn (httptools, uvloop) ASGI"] = [uvicorn, "--http", "httptools", "--loop", "uvloop",
                                                     "--log-level", "warning", "--no-access-log", ASGI_APP]
    if gunicorn:
        g = [gunicorn, "--log-level", "warning", "-w", "1"]
        table["gunicorn gthread 1x32"] = g + ["-k", "gthread", "--threads", "32", APP]
        table["gunicorn gevent"] = g + ["-k", "gevent", APP]
        table["gunicorn sync"] = g + ["-k", "sync", APP]
    return table


def tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


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
    elif cmd[0].endswith("uvicorn"):
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
        proc = psutil.Process(server.pid)
        cpu0 = tree_cpu(proc)
        out = subprocess.run([*wrk, f"-d{seconds:g}s", url], capture_output=True, text=True, timeout=seconds + 30).stdout
        cpu1 = tree_cpu(proc)
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
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", help="comma-separated server names (substrings)")
    args = parser.parse_args()
    table = servers(args.gunicorn, args.uvicorn)
    if args.only:
        table = {k: v for k, v in table.items() if any(s in k for s in args.only.split(","))}
    results: dict[str, list] = {name: [] for name in table}
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
