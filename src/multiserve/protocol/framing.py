"""Framing for the newline-delimited protocol.

Rules (the whole state machine, in one place):

- a request is the bytes up to and including ``\\n``;
- bytes may arrive split anywhere, and one chunk may hold many requests (pipelining): requests are
  returned in the order they arrived;
- at EOF, a final request without ``\\n`` is still a request;
- a request longer than ``max_line`` bytes without ``\\n`` is an error: the framer stops producing
  requests, reports :class:`LineTooLong` once, and buffers nothing more, so memory per connection is
  bounded by ``max_line``.
"""
from __future__ import annotations

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
    ``eof()`` returns the final unterminated line, if any. ``partial`` (read only) holds the
    unfinished request, ``pending`` its size; engines use it for the request timeout (a partial
    request has a first-byte time).
    """

    __slots__ = ("max_line", "partial", "failed")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE):
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self.partial = b""
        self.failed = False

    @property
    def pending(self) -> int:
        return len(self.partial)

    @property
    def error(self) -> LineTooLong:
        return LineTooLong(self.max_line)

    def feed(self, data: bytes) -> list[bytes]:
        if self.failed:
            return []
        if self.partial:
            data = self.partial + data
            self.partial = b""
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > self.max_line:
                self._fail()
            else:
                self.partial = data
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
            self.partial = data[end + 1 :]
        return out

    def eof(self) -> bytes | None:
        """The unterminated last request, or None. The framer is finished afterwards."""
        rest, self.partial = self.partial, b""
        if self.failed or not rest:
            return None
        return rest

    def _fail(self) -> None:
        self.failed = True
        self.partial = b""
