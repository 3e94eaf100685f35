"""Parse rate of a typical GET: httptools (llhttp) against h11, the two sans-IO HTTP/1.1 parsers
issue 12 allows. Benchmark only; h11 is not a dependency (``pip install h11`` to run this).

    flock /tmp/multiserve-bench.lock .venv/bin/python benchmarks/http_parser.py

httptools: one parser fed the same request N times (keep-alive). h11: its own cycle needs a
response before the next request, so it is timed two ways: parse only (a new Connection per
request) and the full cycle (parse, then send a 5-byte response and start the next cycle).
"""
from __future__ import annotations

import sys
import time

import h11
import httptools

REQUEST = (b"GET /index.html?q=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\n"
           b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n")
N = 100_000


class Collect:
    def __init__(self):
        self.n = 0
        self.headers = []

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_message_complete(self):
        self.n += 1
        self.headers = []


def httptools_parse() -> float:
    cb = Collect()
    parser = httptools.HttpRequestParser(cb)
    t = time.perf_counter()
    for _ in range(N):
        parser.feed_data(REQUEST)
    assert cb.n == N
    return time.perf_counter() - t


def h11_parse() -> float:
    t = time.perf_counter()
    for _ in range(N):
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(REQUEST)
        assert type(conn.next_event()) is h11.Request and type(conn.next_event()) is h11.EndOfMessage
    return time.perf_counter() - t


def h11_cycle() -> float:
    conn = h11.Connection(h11.SERVER)
    response = h11.Response(status_code=200, headers=[("content-length", "5")])
    t = time.perf_counter()
    for _ in range(N):
        conn.receive_data(REQUEST)
        assert type(conn.next_event()) is h11.Request and type(conn.next_event()) is h11.EndOfMessage
        conn.send(response)
        conn.send(h11.Data(data=b"hello"))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()
    return time.perf_counter() - t


def main() -> int:
    print(f"CPython {sys.version.split()[0]}, httptools {httptools.__version__}, h11 {h11.__version__}, N={N}")
    for _ in range(3):
        for name, run in (("httptools parse", httptools_parse), ("h11 parse", h11_parse), ("h11 parse+reply", h11_cycle)):
            dt = run()
            print(f"{name:16} {N / dt:10,.0f} requests/s {dt / N * 1e6:7.2f} us/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
