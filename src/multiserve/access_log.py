"""``--access-log FILE|-``: a line per HTTP request, or per line-protocol connection.

HTTP (common log format, plus the seconds the request took, see ``multiserve.meter``)::

    127.0.0.1 - - [01/Dec/2026:12:00:00 +0000] "GET / HTTP/1.1" 200 5 0.000123

A protocol that logs per connection (the line protocol)::

    127.0.0.1:52344 requests=3 in=18 out=18 duration=0.004211 closed="client closed"

How it stays off the serving path: a session appends a tuple of raw fields to a deque (one
append, atomic, no lock) and a writer thread formats and writes them in batches every
``PERIOD`` seconds. Memory is bounded: past ``QUEUE_LIMIT`` waiting entries a line is dropped and
counted; the first drop logs a warning once, the total is logged when the log closes.

Several processes (hybrid workers, process-engine children) write one file: each opens it with
``O_APPEND`` and writes whole lines in writes of at most ``PIPE_BUF`` bytes, which the kernel
never interleaves with another process' write (POSIX guarantees it for a pipe, such as ``-``
under a supervisor; for a regular file Linux appends each write whole under the inode lock). A
process-engine child serves one connection and exits at once, so it writes its lines itself
(``sync``): a blocked write there holds only that child.

Under gevent the writer is a real OS thread (gevent's own originals of ``_thread`` and ``time``),
so a slow disk or a full ``-`` pipe never blocks the hub.
"""
from __future__ import annotations

import collections
import logging
import os
import sys
import time

log = logging.getLogger(__name__)

# Seconds between the writer's batches: lines reach the file within this, and a busy server
# writes a batch per period instead of a line per request.
PERIOD = 0.05
# Entries waiting at most (about 200 bytes each: ~10 MB at most), 10 periods of 20,000 requests/s.
QUEUE_LIMIT = 50_000
PIPE_BUF = 4096  # POSIX' minimum PIPE_BUF, Linux's value: a write this small is never interleaved

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(32), 127]} | {ord('"'): '\\"', ord("\\"): "\\\\"}


def _originals():
    """(start_new_thread, allocate_lock, sleep) that are the OS's even after gevent patched them."""
    import _thread

    monkey = sys.modules.get("gevent.monkey")  # only present when gevent is in use (its engine imports it)
    if monkey is not None and monkey.is_module_patched("threading"):
        return (monkey.get_original("_thread", "start_new_thread"), monkey.get_original("_thread", "allocate_lock"),
                monkey.get_original("time", "sleep"))
    return _thread.start_new_thread, _thread.allocate_lock, time.sleep


def clf_time(when: float) -> str:
    """``01/Dec/2026:12:00:00 +0000`` (UTC, as the common log format writes it)."""
    t = time.gmtime(when)
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def _host(peer) -> str:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer) if peer else "-"


def _peer(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "-"


def format_request(entry) -> str:
    """``("request", peer, when, method, target, version, status, length, seconds)`` -> a CLF line
    (its time: when the request was complete, ``when`` minus ``seconds``);
    ``method`` None: a request refused before it was parsed (request line ``-``)."""
    _, peer, when, method, target, version, status, length, seconds = entry
    if method is None:
        line = "-"
    else:
        if type(target) is bytes:
            target = target.decode("latin-1")
        line = f"{method} {target} HTTP/{version}".translate(_ESCAPES)
    size = "-" if length is None else length
    return f'{_host(peer)} - - [{clf_time(when - seconds)}] "{line}" {status} {size} {seconds:.6f}\n'


def format_connection(entry) -> str:
    """``("connection", peer, requests, bytes_in, bytes_out, seconds, reason)`` -> a line."""
    _, peer, requests, bytes_in, bytes_out, seconds, reason = entry
    return (f"{_peer(peer)} requests={requests} in={bytes_in} out={bytes_out} duration={seconds:.6f} "
            f'closed="{reason.translate(_ESCAPES)}"\n')


FORMATS = {"request": format_request, "connection": format_connection}


def format_entry(entry) -> str:
    return FORMATS[entry[0]](entry)


class AccessLog:
    """One process' writer for ``path`` ("-": standard output). ``put(entry)`` from any thread;
    ``open()`` in the process that serves (starts the writer thread there, after any fork);
    ``close()`` once it is done (writes what is left). ``sync``: ``put`` writes at once."""

    def __init__(self, path: str, sync: bool = False):
        self.path = path
        self.sync = sync
        self.queue = collections.deque()
        self.dropped = 0
        self._fd = None
        self._pid = None
        self._lock = None
        self._closing = False
        self._sleep = time.sleep

    def check(self) -> None:
        """Raise OSError (naming the file) now if it cannot be opened for appending."""
        if self.path != "-":
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
            except OSError as exc:
                raise OSError(exc.errno, f"--access-log: cannot open {self.path}: {exc.strerror}") from None

    def open(self) -> None:
        """Open the file in this process (O_APPEND) and, unless ``sync``, start the writer.
        Raises OSError naming the file if it cannot be opened."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self.queue.clear()  # a fork's copy of the parent's entries is the parent's to write
        start, allocate_lock, self._sleep = _originals()
        self._lock = allocate_lock()
        if self.path == "-":
            self._fd = sys.stdout.fileno()
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._closing = False
        if not self.sync:
            start(self._write_forever, ())

    def put(self, entry) -> None:
        if self.sync:
            if self._pid != os.getpid():
                self.open()
            self._write([format_entry(entry)])
            return
        queue = self.queue
        if len(queue) >= QUEUE_LIMIT:
            self.dropped += 1  # not exact under races between threads: a count for a warning
            if self.dropped == 1:
                log.warning("access log: the writer is behind by %d lines: dropping lines (counted)", QUEUE_LIMIT)
            return
        queue.append(entry)

    def close(self) -> None:
        """Write what is queued and close the file (this process' writer stops)."""
        if self._pid != os.getpid() or self._lock is None:
            return
        with self._lock:
            self._closing = True
            self._flush()
            if self._fd is not None and self.path != "-":
                os.close(self._fd)
            self._fd = None
        if self.dropped:
            log.warning("access log: %d lines dropped (the writer fell behind)", self.dropped)

    def _write_forever(self) -> None:
        while True:
            self._sleep(PERIOD)
            with self._lock:
                if self._closing:
                    return
                try:
                    self._flush()
                except OSError as exc:
                    log.error("access log %s: %s; no more lines are written", self.path, exc.strerror or exc)
                    self._closing = True
                    return

    def _flush(self) -> None:
        queue, lines = self.queue, []
        while True:
            try:
                entry = queue.popleft()
            except IndexError:
                break
            lines.append(format_entry(entry))
        if lines:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        """Whole lines, in writes of at most PIPE_BUF bytes (a longer line goes alone)."""
        fd, chunk, size = self._fd, [], 0
        for line in lines:
            data = line.encode("utf-8", "backslashreplace")
            if chunk and size + len(data) > PIPE_BUF:
                _write_all(fd, b"".join(chunk))
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        if chunk:
            _write_all(fd, b"".join(chunk))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
