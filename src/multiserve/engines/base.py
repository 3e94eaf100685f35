"""The Engine interface and the parts every engine shares.

An engine moves bytes and schedules work; it knows nothing of what the bytes mean. It is
constructed pre-fork from a :class:`~multiserve.config.ServerConfig` (no side effects on the
process), and ``serve`` does everything process-wide (signal handlers, monkey-patching, event
loops) in the process that serves:

    engine.serve(listener, service, ready=callback, stats=ServeStats())

``serve`` owns the listener's accept loop and returns after a graceful drain (SIGTERM/SIGINT);
``ready()`` is called once when it accepts. The caller closes the listener.
"""
from __future__ import annotations

import errno
import logging
import socket
import threading
import time

log = logging.getLogger("multiserve")

# One recv per wake-up: 64 KiB drains a full loopback segment train without a second call.
RECV_SIZE = 65536
# Bytes discarded, and seconds spent, while delivering a final ERR line (see close_with_error).
LINGER_BYTES = 1 << 20
LINGER_SECONDS = 1.0
# accept() errors that mean "no file descriptors or kernel memory right now", as trio handles them:
# back off and keep serving instead of crashing or spinning.
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF_SECONDS = 0.1


class Engine:
    """Base of every engine. Subclasses set ``name`` and implement ``serve``."""

    name = "?"

    def __init__(self, config):
        self.config = config

    def serve(self, listener: socket.socket, service, *, ready, stats: "ServeStats") -> None:
        raise NotImplementedError


class ServeStats:
    """Counters for the exit summary. Updated once per connection, under a lock (``+=`` on a
    shared int is not atomic across threads: see ``multiserve lab race``)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self.errors = 0

    def add(self, connections: int = 0, requests: int = 0, errors: int = 0) -> None:
        with self._lock:
            self.connections += connections
            self.requests += requests
            self.errors += errors

    def summary(self) -> str:
        return f"connections={self.connections} requests={self.requests} errors={self.errors}"


class AcceptErrorLog:
    """Logs an out-of-resources accept error once per episode, not once per retry."""

    def __init__(self):
        self.in_episode = False

    def failed(self, exc: OSError) -> bool:
        """True if ``exc`` is an out-of-resources error the caller should back off from."""
        if exc.errno not in OUT_OF_RESOURCES:
            return False
        if not self.in_episode:
            self.in_episode = True
            log.warning("accept failed: %s; backing off and serving open connections", exc.strerror)
        return True

    def succeeded(self) -> None:
        if self.in_episode:
            self.in_episode = False
            log.info("accept works again")


def close_with_error(sock: socket.socket, reply: bytes) -> None:
    """Deliver ``reply`` (an ERR line) and close so that the client really receives it.

    Closing a socket that still has unread input makes the kernel send a reset, which can destroy
    the reply in flight; so: send, shut down our sending side, then discard what the client still
    sends (bounded in bytes and time) until it closes, and only then close.
    """
    try:
        sock.settimeout(LINGER_SECONDS)
        sock.sendall(reply)
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        discarded = 0
        while discarded < LINGER_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            chunk = sock.recv(RECV_SIZE)
            if not chunk:
                break
            discarded += len(chunk)
    except OSError:
        pass
    finally:
        sock.close()


def describe_peer(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
