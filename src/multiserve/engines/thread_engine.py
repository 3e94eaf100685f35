"""``thread``: a thread per connection (socketserver.ThreadingTCPServer's model)."""
from __future__ import annotations

import threading

from .acceptor import Acceptor
from .base import Engine, ServeStats, yield_gil
from .channels import Channels
from .connection_loop import ConnectionLoop, KernelTimeouts, SocketTimeouts


class ThreadEngine(Engine):
    name = "thread"

    def serve(self, listeners, sessions, *, ready, stop):
        stats, channels = ServeStats(), Channels()
        timeouts = (SocketTimeouts if self.tls else KernelTimeouts)(self.config.idle_timeout)
        serve_connection = ConnectionLoop(sessions, self.config, stats, channels, timeouts, self.tls,
                                          yield_turn=yield_gil)
        acceptor = Acceptor(listeners, self.config.max_conns, stop)

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
            channels.drain(self.config.grace)
            acceptor.close()
        return stats
