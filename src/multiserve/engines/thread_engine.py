"""``thread``: a thread per connection (socketserver.ThreadingTCPServer's model)."""
from __future__ import annotations

import threading

from .base import Engine
from .blocking import Acceptor, ConnectionLoop, Connections, drain


class ThreadEngine(Engine):
    name = "thread"

    def serve(self, listener, service, *, ready, stats):
        connections = Connections()
        serve_connection = ConnectionLoop(service, self.config, stats, connections, kernel_timeouts=True)
        acceptor = Acceptor(listener, self.config.max_conns)

        def run(sock, peer):
            try:
                serve_connection(sock, peer)
            finally:
                acceptor.released()

        def start(sock, peer):
            threading.Thread(target=run, args=(sock, peer), daemon=True).start()

        ready()
        try:
            acceptor.run(start)
        finally:
            drain(connections, self.config.grace)
            acceptor.close()
