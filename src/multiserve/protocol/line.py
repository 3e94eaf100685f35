"""The line protocol (the tutorial's): a request is the bytes up to and including ``\\n``, and
each gets one reply.

Rules (the whole state machine, in one place):

- bytes may arrive split anywhere, and one chunk may hold many requests (pipelining): requests are
  returned in the order they arrived;
- at EOF, a final request without ``\\n`` is still a request;
- a request longer than ``max_line`` bytes without ``\\n`` is an error: the framer stops producing
  requests, reports :class:`LineTooLong` once, and buffers nothing more, so memory per connection is
  bounded by ``max_line``;
- a reply is the ``bytes`` the service returned, unchanged; an error is ``ERR <reason>\\n``.
"""
from __future__ import annotations

from .base import FAILED, PENDING, SETTLED, Protocol, ProtocolError

# 64 KiB: the same order as the header limits of production servers (h11 uses 16 KiB for a whole
# header block, nginx's large_client_header_buffers 8 KiB a line); our lines are whole requests.
DEFAULT_MAX_LINE = 65536


class LineTooLong(Exception):
    """A request grew past ``limit`` bytes without a newline."""

    def __init__(self, limit: int):
        super().__init__(f"line too long (limit {limit} bytes)")
        self.limit = limit


def error_reply(reason: str) -> bytes:
    """The one wire form of an error: ``ERR <reason>\\n``."""
    return b"ERR " + reason.encode("ascii", "replace") + b"\n"


class LineFramer:
    """Turns a byte stream into request lines.

    ``feed(data)`` returns the complete lines that ``data`` finished, each ending in ``\\n``, in
    order. When the partial line passes ``max_line`` bytes, ``feed`` still returns the lines that
    came before it and sets ``failed``: the caller answers those, then sends
    ``error_reply(LineTooLong(...))`` and closes. A failed framer buffers and returns nothing more.
    ``eof()`` returns the final unterminated line, if any. ``pending`` is the size of the
    unfinished request (a partial request has a first-byte time: the request timeout).

    The unfinished request grows in a ``bytearray`` (amortized appends; made only when a request
    is split, so an idle connection holds no buffer), so a long line read in many chunks costs
    time linear in its length (joining ``partial + data`` on every read was
    quadratic: 40 MiB took 10.5 s).
    """

    __slots__ = ("max_line", "partial", "failed", "settled")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE):
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self.partial = b""  # a bytearray only while a request is incomplete (idle: no buffer)
        self.failed = False
        self.settled = True  # == not (partial or failed), kept by feed, eof and _fail

    @property
    def pending(self) -> int:
        return len(self.partial)

    def feed(self, data: bytes) -> list[bytes]:
        if self.failed:
            return []
        partial = self.partial
        if not partial:
            end = len(data) - 1
            if data.find(b"\n") == end and end <= self.max_line and end >= 0:
                return [data]  # the common case: one whole request in one chunk (settled stays)
        out = self._feed_slow(data)
        self.settled = not (self.partial or self.failed)
        return out

    def _feed_slow(self, data: bytes) -> list[bytes]:
        partial = self.partial
        if not partial:
            return self._feed_fresh(data)
        nl = data.find(b"\n")
        if nl < 0:
            if len(partial) + len(data) > self.max_line:
                self._fail()
            else:
                partial += data
            return []
        if len(partial) + nl > self.max_line:
            self._fail()
            return []
        partial += data[: nl + 1]
        first = bytes(partial)
        self.partial = b""
        if nl + 1 == len(data):
            return [first]
        out = [first]
        out.extend(self._feed_fresh(data[nl + 1 :]))
        return out

    def _feed_fresh(self, data: bytes) -> list[bytes]:
        """``feed`` with nothing buffered."""
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > self.max_line:
                self._fail()
            else:
                self.partial = bytearray(data)
            return []
        last = len(data) - 1
        if end == last and data.find(b"\n") == end:
            # the common case: one whole request in one chunk
            if end > self.max_line:
                self._fail()
                return []
            return [data]
        max_line = self.max_line
        out = []
        start = 0
        while start <= end:
            nl = data.index(b"\n", start)
            if nl - start > max_line:
                self._fail()
                return out
            out.append(data[start : nl + 1])
            start = nl + 1
        if last - end > max_line:
            self._fail()
            return out
        if end != last:
            self.partial = bytearray(data[end + 1 :])
        return out

    def eof(self) -> bytes | None:
        """The unterminated last request, or None. The framer is finished afterwards."""
        rest = bytes(self.partial)
        self.partial = b""
        self.settled = not self.failed
        if self.failed or not rest:
            return None
        return rest

    def _fail(self) -> None:
        self.failed = True
        self.settled = False
        self.partial = b""


class LineProtocol(LineFramer, Protocol):
    """:class:`~.base.Protocol` for lines: the framer itself (``receive_data`` is ``feed``, the
    hot path, with no call in between), the service's bytes out unchanged."""

    name = "line"
    passes_bytes = True
    keep_alive = True  # a line connection ends only when the client, an error or a stop ends it
    __slots__ = ("error",)

    def __init__(self, max_line: int = DEFAULT_MAX_LINE):
        super().__init__(max_line)
        self.error = None

    receive_data = LineFramer.feed

    def _fail(self) -> None:
        super()._fail()
        reason = str(LineTooLong(self.max_line))
        self.error = ProtocolError(error_reply(reason), reason)

    def receive_eof(self) -> list[bytes]:
        last = self.eof()
        return [] if last is None else [last]

    def status(self) -> int:
        if self.error is not None:
            return FAILED
        return PENDING if self.partial else SETTLED  # always keep-alive

    def send(self, response) -> bytes:
        if type(response) is bytes:
            return response
        if isinstance(response, (bytes, bytearray, memoryview)):
            return bytes(response)
        raise TypeError(f"a reply must be bytes, not {type(response).__name__}")

    def error_reply(self, reason: str) -> bytes:
        return error_reply(reason)


def factory(config):
    """The registry's entry: one ``LineProtocol`` per connection, with the configured limit."""
    max_line = config.max_line
    return lambda: LineProtocol(max_line)
