"""``threadpool``: a bounded pool of ``--threads`` threads serving connections.

Connections beyond the pool's size wait in its queue, already accepted; ``--max-conns`` bounds
how many are accepted at all. A pool thread serves one connection to the end, so an idle client
occupies a thread until ``--idle-timeout``: the trade-off this engine exists to show.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .base import Engine
from .blocking import Acceptor, ConnectionLoop, Connections, drain

# 32: concurrent.futures' own default is min(32, cores + 4); we take its ceiling.
DEFAULT_THREADS = 32


class ThreadPoolEngine(Engine):
    name = "threadpool"

    def serve(self, listener, service, *, ready, stats):
        connections = Connections()
        serve_connection = ConnectionLoop(service, self.config, stats, connections, kernel_timeouts=True)
        acceptor = Acceptor(listener, self.config.max_conns)
        pool = ThreadPoolExecutor(self.config.threads_or(DEFAULT_THREADS), thread_name_prefix="conn")

        def run(sock, peer):
            try:
                serve_connection(sock, peer)
            finally:
                acceptor.released()

        ready()
        try:
            acceptor.run(lambda sock, peer: pool.submit(run, sock, peer))
        finally:
            drain(connections, self.config.grace)
            pool.shutdown(wait=False, cancel_futures=False)
            acceptor.close()
