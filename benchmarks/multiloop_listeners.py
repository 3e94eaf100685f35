"""multiloop's listener, measured: one listener handed out round-robin (the engine) against one
SO_REUSEPORT socket per loop (``ReusePortEngine`` below, a throw-away variant kept only for this).

Benchmark only (never a test). Short connections (connect, one line, read the reply, close) from
32 clients for 5 s: connections/s and the server's CPU per 1,000 connections; then 16 persistent
connections per server, ten times, and how the loops split them (the ``loop I served`` lines).

    flock /tmp/multiserve-bench.lock .venv/bin/python benchmarks/multiloop_listeners.py 3
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import uvloop

from multiserve.engines import multiloop_engine as m
from multiserve.engines.hybrid_engine import reserve_port
from multiserve.sockets import address_of, bind_listener


class OwnListenerServing(m.LoopServer):
    """A loop other than the first, accepting on its own SO_REUSEPORT socket."""

    def __init__(self, listener, sessions, config, *, share, **hooks):
        super().__init__(listener, m.OpenedElsewhere(sessions), config, admission=share.admits, **hooks)
        self.share = share


class ReusePortEngine(m.MultiloopEngine):
    name = "multiloop-rp"

    def serve(self, listeners, sessions, *, ready, stop):
        config = self.config
        (listener,) = listeners  # one TCP --bind: each loop binds its own SO_REUSEPORT socket on it
        host, port = address_of(listener)
        listener.close()
        reserved = reserve_port(host, port)
        threads = m.ThreadPoolExecutor(config.threads_or(16), thread_name_prefix="blocking")
        share = m.Share(config.max_conns)

        def build():
            own = bind_listener(host, port, config.backlog, reuse_port=True)
            return OwnListenerServing(own, sessions, config, share=share, threads=threads, tls=self.tls,
                                      on_last_accept=own.close)
        others = [m.LoopThread(i, build, config.uvloop) for i in range(1, config.workers)]
        loop = m.new_event_loop(config.uvloop)
        asyncio.set_event_loop(loop)
        try:
            for t in others:
                t.start()
            share.servers = [t.made.result() for t in others]

            async def main():
                own = bind_listener(host, port, config.backlog, reuse_port=True)
                def stop_others():
                    own.close()
                    for t in others:
                        t.stop()
                server = m.LoopServer(own, sessions, config, admission=share.admits, threads=threads,
                                      on_last_accept=stop_others, tls=self.tls)
                share.servers.insert(0, server)
                stats = await server.serve(m.loop_stop_event(asyncio.get_running_loop(), stop), ready=ready)
                await asyncio.gather(*(asyncio.wrap_future(t.done) for t in others), return_exceptions=True)
                return stats
            loop.run_until_complete(main())
        finally:
            for t in others:
                t.stop()
            for t in others:
                t.join()
            loop.close()
            threads.shutdown(wait=False)
            reserved.close()
        for i, s in enumerate(share.servers):
            m.log.info("loop %d served: %s", i, s.stats.summary())
        totals = m.ServeStats()
        for s in share.servers:
            totals.add(*s.stats.as_tuple())
        return totals


def serve_main(argv):  # the server side: ``multiloop-rp`` registered, then the CLI
    from multiserve import engines
    from multiserve.cli import main as cli_main

    engines.ENGINES["multiloop-rp"] = f"{__name__}:ReusePortEngine"
    return cli_main(argv)


SERVE = ("import sys; sys.path.insert(0, %r); import multiloop_listeners as b; sys.exit(b.serve_main(sys.argv[1:]))"
         % os.path.dirname(os.path.abspath(__file__)))

def start(engine, workers):
    cmd = [sys.executable, "-c", SERVE, "serve", "--engine", engine, "--port", "0", "--workers", str(workers), "--backlog", "1024"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline().decode()
    m = re.search(r"127.0.0.1:(\d+)", line)
    return p, int(m.group(1))

async def churn(port, seconds, concurrency):
    done = 0
    end = time.monotonic() + seconds
    async def one():
        nonlocal done
        while time.monotonic() < end:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"x\n"); await r.readline(); w.close()
            done += 1
    await asyncio.gather(*(one() for _ in range(concurrency)))
    return done

async def persistent(port, n):
    pairs = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
    for r, w in pairs:
        w.write(b"x\n"); await r.readline()
    for r, w in pairs:
        w.close()

def run(engine, workers, seconds=5, concurrency=32):
    p, port = start(engine, workers)
    proc = psutil.Process(p.pid)
    uvloop.run(churn(port, 0.5, concurrency))  # warm-up
    c0 = sum(proc.cpu_times()[:2]); t0 = time.monotonic()
    n = uvloop.run(churn(port, seconds, concurrency))
    dt = time.monotonic() - t0; cpu = sum(proc.cpu_times()[:2]) - c0
    uvloop.run(persistent(port, 16))
    p.send_signal(signal.SIGTERM); _, err = p.communicate(timeout=30)
    split = re.findall(r"loop (\d+) served: connections=(\d+)", err.decode())
    print(f"{engine:14s} conn/s={n/dt:8.0f}  server CPU ms/1000 conns={1000*cpu*1000/n:7.1f}  loadavg={os.getloadavg()[0]:.1f}  per-loop connections={[int(c) for _, c in split]}", flush=True)

def balance(engine, trials=10):
    splits = []
    for _ in range(trials):
        p, port = start(engine, 2)
        uvloop.run(persistent(port, 16))
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        splits.append(tuple(int(c) for c in re.findall(r"loop \\d+ served: connections=(\\d+)", err.decode())))
    print(f"{engine:14s} 16 connections over 2 loops, {trials} trials: {splits}", flush=True)


if __name__ == "__main__":
    for rep in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
        for engine in ("multiloop", "multiloop-rp"):
            run(engine, 2)
    for engine in ("multiloop", "multiloop-rp"):
        balance(engine)
