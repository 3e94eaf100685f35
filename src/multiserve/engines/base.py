"""The Engine contract: the one seam for concurrency, as ``process_request`` is socketserver's.

An engine moves bytes and schedules work; it never names a protocol or a service. Its caller
(``multiserve.server.serve``) does::

    engine = SomeEngine(config)                 # pre-fork: no side effect on the process
    stats = engine.serve(listeners, sessions, ready=ready, stop=stop)

What the caller provides, and may rely on:

``listeners``
    a non-empty sequence of bound, listening sockets (one per ``--bind`` address, or systemd's
    sockets), TCP and unix alike; the engine accepts on every one of them and serves the same
    sessions on all, ``--max-conns`` counting connections from all of them together (one limit
    for the server), and a graceful drain stops every one. The caller closes them afterwards.
``sessions``
    a :class:`~multiserve.session.SessionFactory`: ``sessions.make_session(peer)`` per accepted
    connection; ``sessions.plan`` says which pools the service wants (``wants_cpu_pool``);
    ``open_service()``/``close_service()`` for engines that serve in forked workers.
``ready()``
    to be called once, when the engine accepts.
``stop``
    a :class:`~multiserve.stop.Stop`, set on SIGTERM/SIGINT (or by a test). The caller installed
    the signal handlers; an engine installs none for stopping (an engine that forks makes its own
    in the child, see ``multiserve.stop``).
``tls`` (given to ``__init__``)
    None, or the server's ``ssl.SSLContext``: the engine serves every accepted connection through
    it (``multiserve.tls`` says how each kind of engine does), its handshake bounded by
    ``config.request_timeout``, a failed handshake costing one log line and counted as that
    connection's error.

What an engine implements: ``serve``, which returns a :class:`ServeStats` after a graceful drain
(stop accepting, answer what was received, finish in-flight requests within ``config.grace``,
then cut the rest), and closes every connection it accepted. What it may extend: ``__init__``
(still side-effect free). The connection life cycle an engine runs is the session's (see
``multiserve.session``); the timeouts and their replies are ``engines.timeouts``'; the accept
loop's error handling is ``engines.acceptor``'s.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence

# One recv per wake-up: 64 KiB drains a full loopback segment train without a second call.
RECV_SIZE = 65536
# Fairness: pipelined requests one connection has answered before the others get a turn (the
# event loops and gevent; threads are preempted anyway). A client pipelining without reading its
# replies fills the kernel's send buffer (tcp_wmem's 4 MiB here: ~380,000 replies of 11 bytes)
# before backpressure stops it, and one read brings up to 23,000 such requests (uvloop reads
# 256 KiB): answered in one go, ten such clients made a loop turn ~0.2 s and a polite client's
# replies 6 s late (docs/reliability.md, never-read). 256 requests are ~0.1 ms of work, and a
# pipelined batch still costs one write per 256 replies.
PIPELINE_QUANTUM = 256
# Bytes discarded, and seconds spent, while delivering a final error reply (see close_with_error).
LINGER_BYTES = 1 << 20
LINGER_SECONDS = 1.0


class Engine:
    """Base of every engine. Subclasses set ``name`` and implement ``serve``."""

    name = "?"

    def __init__(self, config, tls=None):
        self.config = config
        self.tls = tls

    def serve(self, listeners: Sequence[socket.socket], sessions, *, ready, stop) -> "ServeStats":
        raise NotImplementedError


class ServeStats:
    """What a server did: ``connections`` closed, ``requests`` answered, ``errors`` (connections
    that ended on an error: a protocol error, a timeout, a reset, a failed setup). Updated once
    per connection, under a lock (``+=`` on a shared int is not atomic across threads: see
    ``multiserve lab race``)."""

    __slots__ = ("_lock", "connections", "requests", "errors")

    def __init__(self, connections: int = 0, requests: int = 0, errors: int = 0):
        self._lock = threading.Lock()
        self.connections = connections
        self.requests = requests
        self.errors = errors

    def add(self, connections: int = 0, requests: int = 0, errors: int = 0) -> None:
        with self._lock:
            self.connections += connections
            self.requests += requests
            self.errors += errors

    def add_session(self, session) -> None:
        """One connection ended: its requests, and whether it ended on an error."""
        self.add(1, session.requests, session.errored)

    def as_tuple(self) -> tuple[int, int, int]:
        return self.connections, self.requests, self.errors

    def summary(self) -> str:
        return f"connections={self.connections} requests={self.requests} errors={self.errors}"

    def __repr__(self) -> str:
        return f"ServeStats({self.summary().replace(' ', ', ')})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ServeStats) and self.as_tuple() == other.as_tuple()


def close_with_error(sock: socket.socket, reply: bytes | None) -> None:
    """Deliver ``reply`` (a final error reply; None: nothing to say) and close so that the
    client really receives it.

    Closing a socket that still has unread input makes the kernel send a reset, which can destroy
    the reply in flight; so: send, shut down our sending side, then discard what the client still
    sends (bounded in bytes and time) until it closes, and only then close.
    """
    try:
        sock.settimeout(LINGER_SECONDS)
        if reply:
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


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY on a TCP connection (a reply leaves at once, not after Nagle's wait); a unix
    socket connection has no such option (setting it fails with EOPNOTSUPP), and needs none."""
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def send_reply(sendall, reply) -> None:
    """Write one reply (``bytes``, or an iterable of byte pieces) with a blocking ``sendall``."""
    if type(reply) is bytes:
        sendall(reply)
    else:
        for piece in reply:
            sendall(piece)


def yield_gil() -> None:
    """A thread's turn ends: ``time.sleep(0)`` releases the GIL, and a thread waiting for it
    (a client's recv that returned, say) runs before this one goes on."""
    time.sleep(0)


def answer_in_turns(session, requests, send, yield_turn) -> None:
    """Answer ``requests`` (a read's worth) and write the replies with the blocking ``send``,
    PIPELINE_QUANTUM at a time, calling ``yield_turn()`` after each so that other connections
    get theirs (a thread's ``time.sleep(0)`` hands the GIL over; gevent's a timer tick). A write
    per quantum, not one per read: a flooder's full send buffer then blocks it early (tried:
    writing the read's replies in one go at the end made a polite client's p99 under never-read
    2-3x worse, threadpool 119 -> 329 ms, gevent 117 -> 260 ms, same load)."""
    if len(requests) <= PIPELINE_QUANTUM:
        send_reply(send, session.answer_all(requests))
        return
    for start in range(0, len(requests), PIPELINE_QUANTUM):
        send_reply(send, session.answer_all(requests[start:start + PIPELINE_QUANTUM]))
        yield_turn()


def describe_error(exc: OSError) -> str:
    """The one log line's text for a connection's I/O error."""
    if isinstance(exc, (BlockingIOError, TimeoutError)):
        return "send made no progress (client not reading); closed"
    if isinstance(exc, ConnectionResetError):
        return "reset by client"
    if isinstance(exc, BrokenPipeError):
        return "client went away mid-write"
    return exc.strerror or f"{type(exc).__name__}: {exc}"
