"""Servers under the C reference load client (../shared/instruments), pinned to separate cores.

For each server command and connection count: start the server on core 1 (taskset), wait for its
ready line, run the C ``loadgen`` on core 0, and report requests/s, latency and the server's CPU
microseconds per request (its own CPU plus its children's, sampled over the measured window).

    python benchmarks/c_client.py --instruments ../shared/instruments --servers engines \
        --connections 1,16,256 --seconds 5 --repeat 3

The instruments are compiled into a temporary folder, never copied into the repository.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from multiserve.compare.launcher import tree_cpu_seconds
from multiserve.launch import ServerProcess, free_port

PY = sys.executable

ENGINES = {
    e: [PY, "-m", "multiserve", "serve", "--engine", e, "--port", "0", "--log-level", "warning"]
    for e in ("asyncio", "thread", "threadpool", "gevent", "process", "hybrid")
}
ENGINES["hybrid"] += ["--workers", "1"]  # one core for the server: the client owns the other
PEERS = {
    name: [PY, "-m", "multiserve.compare.baselines", name, "--port", "0"]
    for name in ("uvloop-protocol", "asyncio-streams", "threadingtcp", "forkingtcp", "gevent-streamserver")
}


def build(instruments: str) -> str:
    out = tempfile.mkdtemp(prefix="instruments-")
    subprocess.run(["cc", "-O2", "-o", f"{out}/echo_epoll", f"{instruments}/echo_epoll.c"], check=True)
    subprocess.run(["cc", "-O2", "-pthread", "-o", f"{out}/loadgen", f"{instruments}/loadgen.c", "-lm"], check=True)
    return out


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU of the server, its reaped children and its live descendants."""
    def descendants():
        try:
            return proc.children(recursive=True)
        except psutil.Error:
            return []
    return tree_cpu_seconds(proc, descendants)


def start(cmd, core: int) -> ServerProcess:
    """The server pinned to ``core``, through the one harness (multiserve.launch): ready on its
    ready line, or, for the C server (``{port}`` in its command), once that port accepts."""
    if "{port}" in cmd:
        port = free_port()
        return ServerProcess(["taskset", "-c", str(core), *(a.replace("{port}", str(port)) for a in cmd)], port=port)
    return ServerProcess(["taskset", "-c", str(core), *cmd])


def stop(server: ServerProcess) -> None:
    if server.terminate(15) is None:
        print(f"# {server.command[3:]} did not stop in 15 s: killed", file=sys.stderr)
    server.close()


def run_cell(loadgen: str, cmd, conns: int, seconds: float, warmup: float, depth: int) -> dict:
    process = start(cmd, core=1)
    port = process.port
    try:
        server = psutil.Process(process.pid)
        lg = subprocess.Popen(["taskset", "-c", "0", loadgen, "-p", str(port), "-c", str(conns),
                               "-d", str(seconds), "-w", str(warmup), "-P", str(depth)],
                              stdout=subprocess.PIPE, text=True)
        cpu0 = None
        result = {}
        for line in lg.stdout:
            if line.startswith("primed"):
                time.sleep(warmup)
                cpu0 = cpu_seconds(server)
            elif "rps=" in line:
                cpu1 = cpu_seconds(server)
                result = dict(kv.split("=", 1) for kv in line.split())
        lg.wait(60)
        requests = float(result.get("requests", 0))
        result["server_us_per_req"] = (cpu1 - cpu0) * 1e6 / requests if requests and cpu0 is not None else float("nan")
        return result
    finally:
        stop(process)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instruments", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "instruments"))
    ap.add_argument("--servers", default="engines", help="engines | peers | all | comma list of names (c-epoll too)")
    ap.add_argument("--connections", default="1,16,256")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--before-src", metavar="DIR",
                    help="also run each engine from another checkout's src/ (as ENGINE@before): "
                         "before/after figures in one run, e.g. from `git worktree add`")
    args = ap.parse_args()
    tools = build(args.instruments)
    try:
        servers = {"c-epoll": [f"{tools}/echo_epoll", "{port}"], **ENGINES, **PEERS}
        if args.before_src:
            src = os.path.abspath(args.before_src)
            servers.update({f"{e}@before": ["env", f"PYTHONPATH={src}", *cmd] for e, cmd in ENGINES.items()})
        groups = {"engines": ["c-epoll", *ENGINES], "peers": ["c-epoll", *PEERS], "all": list(servers)}
        names = groups.get(args.servers) or args.servers.split(",")
        conns = [int(c) for c in args.connections.split(",")]
        runs: dict = {}
        for _ in range(args.repeat):  # interleaved: every server once per round (ABAB)
            for name in names:
                for c in conns:
                    r = run_cell(f"{tools}/loadgen", servers[name], c, args.seconds, args.warmup, args.depth)
                    runs.setdefault((name, c), []).append(r)
                    print(f"# {name} c={c} rps={r.get('rps')} p50={r.get('p50_us')} p99={r.get('p99_us')} "
                          f"cpu_us/req={r['server_us_per_req']:.2f} errors={r.get('errors')}", file=sys.stderr, flush=True)
        print("| server | " + " | ".join(f"c={c} req/s" for c in conns) + " | " + " | ".join(f"c={c} CPU µs/req" for c in conns) + " |")
        print("|---" * (1 + 2 * len(conns)) + "|")
        for name in names:
            rps = [statistics.median(float(r["rps"]) for r in runs[(name, c)]) for c in conns]
            us = [statistics.median(r["server_us_per_req"] for r in runs[(name, c)]) for c in conns]
            print(f"| {name} | " + " | ".join(f"{x/1000:.1f}k" for x in rps) + " | " + " | ".join(f"{u:.1f}" for u in us) + " |")
    finally:
        shutil.rmtree(tools, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
