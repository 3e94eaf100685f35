"""Connection hand-off between hybrid workers: a retiring worker passes its idle connections'
sockets to a live worker (SCM_RIGHTS over a unix socket), so the client's TCP connection never
closes across a reload, a scale-down or a ``--max-requests`` recycle.

Who talks to whom: the supervisor *brokers*, it does not relay. It names the sockets: each
worker listens on the abstract unix socket ``\\0multiserve-handoff-<random token>-<slot index>``
(:class:`Inbox`; abstract, so nothing is left on disk when a supervisor is killed, and a
connection from another user is refused by its peer credentials); the shared slot table
already says which workers accept and which are draining, so a retiring worker picks its
targets there and connects to them directly (:class:`Courier`). The supervisor never holds a
client's descriptor: a relay would add a hop, a copy of every descriptor in the one process
that must never block or die, and a second place where a connection can be lost.

The wire: SOCK_SEQPACKET, one message per connection: an 8-byte sequence number with the
descriptor as SCM_RIGHTS; the receiver answers each message with its sequence number once it
holds its own descriptor. The sender keeps its copy until that acknowledgement, so a target that
goes away first (its inbox closed with messages unread: the kernel closes those descriptors)
costs nothing: the sender still holds the connection and sends it to another worker. Only bytes
the kernel holds move with a connection: a worker hands off a connection only when its protocol
buffer is empty (no partial request read), so no application state travels.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import socket
import struct
import time

log = logging.getLogger(__name__)

MESSAGE = struct.Struct("!Q")  # a sequence number; the descriptor travels beside it
# The inbox's accept backlog: one connection per sending worker at a time; 64 is the supervisor
# table's minimum size, so every other worker can be connecting at once.
INBOX_BACKLOG = 64


_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def new_namespace() -> str:
    """The supervisor's prefix for its workers' inbox names: random, so two servers never meet."""
    return f"\0multiserve-handoff-{secrets.token_hex(8)}-"


def inbox_path(namespace: str, index: int) -> str:
    """Where the worker in slot ``index`` receives connections (the supervisor names it)."""
    return f"{namespace}{index}"


def same_user(link: socket.socket) -> bool:
    """An abstract socket has no file permissions: only a peer of our own user may hand us
    connections (the kernel's SO_PEERCRED)."""
    _, uid, _ = _CREDENTIALS.unpack(link.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))
    return uid == os.getuid()


class Inbox:
    """The receiving side, one per worker: adopts every descriptor it is sent through ``adopt(sock)``
    (the worker's ``LoopServer.adopt``: the same path as an accepted connection)."""

    def __init__(self, path: str, adopt):
        self.path = path
        self.adopt = adopt
        self.adopted = 0
        self.links: set[socket.socket] = set()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(INBOX_BACKLOG)
        self.listener.setblocking(False)
        self.loop = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.listener.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                link, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            if not same_user(link):
                log.warning("hand-off inbox: refused a connection from another user")
                link.close()
                continue
            link.setblocking(False)
            self.links.add(link)
            self.loop.add_reader(link.fileno(), self._read, link)

    def _read(self, link: socket.socket) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(link, MESSAGE.size, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.info("hand-off link failed: %s", exc)
                data, fds = b"", []
            if not data:
                self._drop(link)
                for fd in fds:
                    os.close(fd)
                return
            for fd in fds:  # one per message
                sock = socket.socket(fileno=fd)
                self.adopted += 1
                self.adopt(sock)
            try:
                link.send(data)  # the acknowledgement: the sender may close its copy now
            except OSError as exc:
                log.info("hand-off acknowledgement failed: %s", exc)

    def _drop(self, link: socket.socket) -> None:
        self.loop.remove_reader(link.fileno())
        self.links.discard(link)
        link.close()

    def close(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.listener.fileno())
            for link in list(self.links):
                self._drop(link)
        self.listener.close()  # abstract: the name is free again, nothing to unlink


class Link:
    """One sending worker's connection to one target's inbox."""

    def __init__(self, index: int, sock: socket.socket):
        self.index = index
        self.sock = sock
        self.outbox: collections.deque = collections.deque()  # (seq, fd) waiting for buffer room
        self.unacked: dict[int, int] = {}  # seq -> our copy of the descriptor
        self.writing = False


class Courier:
    """The sending side of a retiring worker: ``send(fd)`` passes a connection's descriptor (its
    own copy, which the courier closes once the target holds its own) to the least-loaded live
    worker. ``targets()`` is empty when no other worker accepts: the caller then closes the
    connection as before."""

    def __init__(self, loop, namespace: str, context):
        self.loop = loop
        self.namespace = namespace
        self.context = context
        self.links: dict[int, Link] = {}
        self.sent_to: collections.Counter = collections.Counter()
        self.seq = 0
        self.moved = 0  # acknowledged by a target
        self.lost = 0  # no target was left for it: closed
        self.settled = asyncio.Event()
        self.settled.set()

    # -- where to -------------------------------------------------------------------------------
    def targets(self) -> list[int]:
        """Slot indexes of the other workers that accept and are not draining, least loaded
        first (counting what we sent them since their last beat), those about to be recycled
        (``--max-requests`` spent) last."""
        context = self.context
        since = time.monotonic() - 2 * context.heartbeat_interval
        found = [(slot.recycle, slot.open + self.sent_to[i], i) for i, slot in enumerate(context.table.slots)
                 if i != context.index and slot.ready and not slot.handoff and slot.beat >= since]
        return [i for _, _, i in sorted(found)]

    # -- sending --------------------------------------------------------------------------------
    def send(self, fd: int) -> bool:
        """Pass ``fd`` on (ours: closed once acknowledged, or when no target is left). False if
        no target could be reached: the descriptor is then closed, the connection with it."""
        self.seq += 1
        return self._send(self.seq, fd)

    def _send(self, seq: int, fd: int) -> bool:
        for index in self.targets():
            link = self.links.get(index) or self._connect(index)
            if link is None:
                continue
            self.settled.clear()
            link.outbox.append((seq, fd))
            self.sent_to[index] += 1
            self._flush(link)
            return True
        os.close(fd)
        self.lost += 1
        self._check_settled()
        return False

    def _connect(self, index: int) -> Link | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(inbox_path(self.namespace, index))  # a unix connect does not wait
        except OSError as exc:
            log.info("hand-off to worker slot %d: %s", index, exc)
            sock.close()
            return None
        sock.setblocking(False)
        link = self.links[index] = Link(index, sock)
        self.loop.add_reader(sock.fileno(), self._read_acks, link)
        return link

    def _flush(self, link: Link) -> None:
        while link.outbox:
            seq, fd = link.outbox[0]
            try:
                socket.send_fds(link.sock, [MESSAGE.pack(seq)], [fd])
            except (BlockingIOError, InterruptedError):
                if not link.writing:
                    link.writing = True
                    self.loop.add_writer(link.sock.fileno(), self._writable, link)
                return
            except OSError as exc:
                log.info("hand-off to worker slot %d failed: %s", link.index, exc)
                self._fail(link)
                return
            link.outbox.popleft()
            link.unacked[seq] = fd
        if link.writing:
            link.writing = False
            self.loop.remove_writer(link.sock.fileno())

    def _writable(self, link: Link) -> None:
        self._flush(link)

    def _read_acks(self, link: Link) -> None:
        while True:
            try:
                data = link.sock.recv(MESSAGE.size)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if len(data) != MESSAGE.size:
                self._fail(link)  # the target went away: what it did not acknowledge goes elsewhere
                return
            fd = link.unacked.pop(MESSAGE.unpack(data)[0], None)
            if fd is not None:
                os.close(fd)
                self.moved += 1
        self._check_settled()

    def _fail(self, link: Link) -> None:
        """The link broke: resend what it did not acknowledge (we still hold those connections)."""
        self._close_link(link)
        waiting = sorted(link.unacked.items()) + list(link.outbox)
        link.unacked.clear()
        link.outbox.clear()
        for seq, fd in waiting:
            self._send(seq, fd)
        self._check_settled()

    def _close_link(self, link: Link) -> None:
        self.links.pop(link.index, None)
        self.loop.remove_reader(link.sock.fileno())
        if link.writing:
            self.loop.remove_writer(link.sock.fileno())
        link.sock.close()

    def _check_settled(self) -> None:
        if not any(link.unacked or link.outbox for link in self.links.values()):
            self.settled.set()

    async def finish(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for every hand-off to be acknowledged, then close what is
        left (those connections close) and the links."""
        if not self.settled.is_set():
            try:
                await asyncio.wait_for(self.settled.wait(), max(timeout, 0.0))
            except asyncio.TimeoutError:
                pass
        for link in list(self.links.values()):
            for fd in [*link.unacked.values(), *(fd for _, fd in link.outbox)]:
                os.close(fd)
                self.lost += 1
            self._close_link(link)

    def where(self) -> str:
        return ", ".join(f"slot {i}: {n}" for i, n in sorted(self.sent_to.items())) or "none"
