"""A raw-socket HTTP/1.1 test client: requests are bytes the test writes, responses are read with
httptools' response parser (llhttp), so framing errors in a server's output fail the test."""
from __future__ import annotations

import collections
import socket

import httptools


class Reply:
    __slots__ = ("status", "headers", "body", "version")

    def __init__(self, status, headers, body, version):
        self.status = status
        self.headers = headers  # list of (lower-case name str, value str)
        self.body = body
        self.version = version

    def header(self, name: str):
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def __repr__(self):
        return f"Reply({self.status}, {self.headers}, {self.body[:80]!r})"


class _Collector:
    def __init__(self):
        self.done = collections.deque()
        self.in_body = False
        self.headers = []
        self.body = []

    def on_headers_complete(self):
        self.status = self.parser.get_status_code()
        self.in_body = True

    def on_header(self, name, value):
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        self.done.append((self.status, self.headers, b"".join(self.body)))
        self.headers, self.body = [], []
        self.in_body = False

    def eof(self):
        """llhttp ends a close-delimited body at EOF (``llhttp_finish``, which httptools does not
        offer): a response without Content-Length or chunking is complete when the server closes."""
        framed = any(name in ("content-length", "transfer-encoding") for name, _ in self.headers)
        if self.in_body and not framed:
            self.on_message_complete()


class HTTPClient:
    """One connection. ``send(raw)``, then ``reply()`` per response, in order; ``closed()`` waits
    for the server to close (True) or for ``timeout`` (False); ``recv_raw`` reads bytes as is."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.collector = _Collector()
        self.parser = self.collector.parser = httptools.HttpResponseParser(self.collector)
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method="GET", path="/", headers=(), body=b"", host=True) -> None:
        lines = [f"{method} {path} HTTP/1.1"]
        if host:
            lines.append("Host: 127.0.0.1")
        lines += [f"{k}: {v}" for k, v in headers]
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def reply(self) -> Reply:
        """The next response (AssertionError if the server closes before it is complete)."""
        while not self.collector.done:
            data = self.sock.recv(65536)
            if not data:
                self.eof = True
                self.collector.eof()
                if self.collector.done:
                    break
                raise AssertionError("the server closed before a complete response")
            self.parser.feed_data(data)
        status, headers, body = self.collector.done.popleft()
        return Reply(status, headers, body, None)

    def recv_raw(self, until: bytes, limit: int = 1 << 20) -> bytes:
        """Raw bytes up to and including ``until`` (for HEAD and interim responses)."""
        buf = b""
        while until not in buf:
            data = self.sock.recv(1)
            if not data:
                raise AssertionError(f"closed before {until!r}; got {buf!r}")
            buf += data
            if len(buf) > limit:
                raise AssertionError("too much data")
        return buf

    def closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes (EOF or reset) within ``timeout`` with no more bytes."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except (socket.timeout, TimeoutError):
            return False
        if data:
            raise AssertionError(f"expected a close, got {data[:200]!r}")
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
