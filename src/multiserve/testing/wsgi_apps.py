"""WSGI apps for the HTTP conformance suite: one app, a route per behaviour under test.

Each route states what a conforming server must do with it. ``close()`` of every iterable the
app returns writes ``iterable closed: <path>`` to ``wsgi.errors`` (the server's stderr), so a
test can check that the server called it, also when the client went away or the body failed.
"""
from __future__ import annotations

import os
import sys
import time
from urllib.parse import parse_qs


class Body:
    """An iterable body with a ``close()`` that says it was called."""

    def __init__(self, pieces, environ, fail_after=None, delay=0.0):
        self.pieces = pieces
        self.errors = environ["wsgi.errors"]
        self.path = environ["PATH_INFO"]
        self.fail_after = fail_after
        self.delay = delay

    def __iter__(self):
        for i, piece in enumerate(self.pieces):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("body failed midway (on purpose)")
            if i and self.delay:
                time.sleep(self.delay)
            yield piece

    def close(self):
        self.errors.write(f"iterable closed: {self.path}\n")
        self.errors.flush()


def _query(environ) -> dict:
    return {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _query(environ)
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]
    if path == "/echo":  # the body, and how it came
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("X-Content-Length", environ.get("CONTENT_LENGTH", "")),
                                  ("X-Chunked", str("HTTP_TRANSFER_ENCODING" in environ))])
        return [body]
    if path == "/environ":  # a few environ keys, one per line
        keys = q.get("keys", "REQUEST_METHOD,PATH_INFO,QUERY_STRING,SERVER_PROTOCOL").split(",")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["\n".join(f"{k}={environ.get(k, '')}" for k in keys).encode("latin-1")]
    if path == "/stream":  # n pieces of size bytes, no Content-Length: chunked on HTTP/1.1
        n, size = int(q.get("n", 5)), int(q.get("size", 10))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Body([bytes([65 + i % 26]) * size for i in range(n)], environ, delay=float(q.get("delay", 0)))
    if path == "/sized":  # the same with a Content-Length from the app
        n, size = int(q.get("n", 5)), int(q.get("size", 10))
        start_response("200 OK", [("Content-Length", str(n * size))])
        return Body([bytes([65 + i % 26]) * size for i in range(n)], environ)
    if path == "/fail":  # raises before any byte: 500, the connection goes on
        raise RuntimeError("app failed (on purpose)")
    if path == "/fail-midway":  # raises after the first piece: the response is cut, the connection closed
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body([b"first piece\n", b"never sent\n"], environ, fail_after=1)
    if path == "/exc-info":  # replaces its headers through exc_info before any byte
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"unavailable"]
    if path == "/write":  # the legacy write() callable, then an iterable
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]
    if path == "/close":  # the app asks the connection to close after this response
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
        return [b"bye"]
    if path == "/sleep":  # blocks as a database call would
        time.sleep(float(q.get("s", 0.2)))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/barrier":  # waits until n requests are inside at once (across processes: a directory)
        meeting, n = q["dir"], int(q["n"])
        open(os.path.join(meeting, q["id"]), "w").close()
        for _ in range(2000):  # 20 s at most
            if len(os.listdir(meeting)) >= n:
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"met"]
            time.sleep(0.01)
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"barrier not met: requests did not overlap"]
    if path == "/stream-wait":  # first piece, then blocks until /touch made dir/go, then the rest
        go = os.path.join(q["dir"], "go")

        def pieces():
            yield b"first\n"
            for _ in range(2000):  # 20 s at most
                if os.path.exists(go):
                    yield b"second\n"
                    return
                time.sleep(0.01)
            yield b"gave up waiting\n"

        start_response("200 OK", [("Content-Type", "text/plain")])
        return pieces()
    if path == "/touch":
        open(os.path.join(q["dir"], "go"), "w").close()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"touched"]
    if path == "/no-content":
        start_response("204 No Content", [])
        return []
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]
