"""The one server-subprocess harness: start a server command, know when it serves, stop it, kill it.

Used by the tests (:mod:`multiserve.testing`), by ``multiserve compare`` and by the ticket
benchmark, so that all of them start, wait for and end a server the same way:

- the command runs in its own session (process group), so children a forking server made are
  found (psutil) and, at the end, killed by the group's id, never by name;
- it is *ready* when it prints multiserve's ready line (:data:`READY`, printed by every engine
  and every compare baseline) or, when a ``port`` is given (a foreign server that prints
  nothing), as soon as that port accepts a connection;
- stdout is drained by a thread after the ready line and stderr goes to a temporary file, so a
  chatty server never blocks on a full pipe nobody reads;
- :meth:`ServerProcess.stop` is the clean path (SIGTERM, wait, the exit code);
  :meth:`ServerProcess.kill` SIGKILLs the whole group and reaps, whatever happened.

Raises :class:`NotReady` (a one-line reason) when the server exits or stays silent.
"""
from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time

# multiserve.server.ready_line's format: "multiserve listening on HOST:PORT engine=E pid=N"
# ([::1]:PORT for IPv6; an address without a port, unix:PATH, is all host, and the port None);
# HOST:PORT is the first address a server serves on.
READY = re.compile(rb"multiserve listening on (\S+?)(?::(\d+))? engine=(\S+) pid=(\d+)")
# ...then, when it serves on several addresses (repeated --bind, several systemd sockets), the
# others, comma-separated: "pid=N also=unix:/run/x.sock,[::1]:8080".
READY_ALSO = re.compile(rb"pid=\d+ also=(\S+)")
# ...and then the interpreter it serves on, and the GIL's state after its imports (issue 13).
READY_PYTHON = re.compile(rb"pid=\d+ python=(\S+) gil=(on|off)")
# A cold interpreter with gevent imported starts in ~0.3 s here; a loaded 2-core machine can be
# ten times slower: 20 s is far beyond both.
READY_TIMEOUT = 20.0
# Between two connect attempts while waiting for a port to accept (a foreign server): short
# against a server's start-up (0.3 s and more), and 100 attempts a second cost nothing.
PORT_POLL_S = 0.01


class NotReady(Exception):
    """The server exited, or neither printed its ready line nor accepted, in time (one line)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (bound to port 0, then released), for a command that needs
    its port on the command line. Another process may take it meanwhile: then the server fails
    to bind and says so, which is a failure, never a wrong measurement."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def ready_address(match) -> tuple:
    """(host, port) from a READY match: ("::1", 8080) for "[::1]:8080", ("unix:PATH", None)."""
    host = match.group(1).decode()
    if match.group(2) is None:
        return host, None
    return host.removeprefix("[").removesuffix("]"), int(match.group(2))


def split_address(text: str) -> tuple:
    """(host, port) of one address as the ready line writes it ("127.0.0.1:8080", "[::1]:8080"),
    or ("unix:PATH", None) for one without a port: read by ``--bind``'s own parser."""
    from .sockets import parse_bind

    where = parse_bind(text)
    return (where.host, where.port) if where.kind == "tcp" else (text, None)


def ready_addresses(line: bytes) -> list[tuple]:
    """Every (host, port) a ready line names: its ``on`` address first, then its ``also=`` ones."""
    m = READY.search(line)
    if m is None:
        return []
    end = line.find(b"\n", m.start())
    also = READY_ALSO.search(line, m.start(), end if end >= 0 else len(line))
    others = also.group(1).decode().split(",") if also else []
    return [ready_address(m), *(split_address(text) for text in others)]


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class ServerProcess:
    """A started server command: ``host``, ``port``, ``proc`` (the Popen), ``pid``;
    ``addresses``: every (host, port) the ready line names, ``(host, port)`` first.

    ``port=None``: wait for the ready line and take host and port from it. ``port=N``: the
    server is ready when it prints the ready line or when ``host:N`` accepts, whichever first.
    Construction returns only once the server is ready; otherwise it kills the group and
    raises :class:`NotReady`. Use as a context manager: leaving it kills the group.
    """

    def __init__(self, command: list[str], *, ready_timeout: float = READY_TIMEOUT, env=None, cwd=None,
                 host: str = "127.0.0.1", port: int | None = None, pass_fds=()):
        self.command = list(command)
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr, env=env, cwd=cwd, start_new_session=True,
                                     pass_fds=pass_fds)
        self.stdout_seen = b""
        # From the ready line: {"version": "3.13.5t", "gil_enabled": False}, or None (a foreign server)
        self.interpreter: dict | None = None
        self.addresses: list[tuple] = []
        try:
            self.host, self.port = self._wait_ready(ready_timeout, host, port)
            self.addresses = self.addresses or [(self.host, self.port)]
        except BaseException:
            self.close()
            raise
        # Keep reading stdout so that a server printing after its ready line never blocks.
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    def _wait_ready(self, timeout: float, host: str, port: int | None):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        stdout_open = True
        while (left := deadline - time.monotonic()) > 0:
            if stdout_open and select.select([fd], [], [], min(left, PORT_POLL_S) if port else left)[0]:
                chunk = os.read(fd, 4096)
                if chunk:
                    self.stdout_seen += chunk
                    m = READY.search(self.stdout_seen)
                    if m and b"\n" in self.stdout_seen[m.start():]:  # the whole line
                        self.addresses = ready_addresses(self.stdout_seen[m.start():])
                        if facts := READY_PYTHON.search(self.stdout_seen, m.start()):
                            self.interpreter = {"version": facts.group(1).decode(),
                                                "gil_enabled": facts.group(2) == b"on"}
                        return ready_address(m)
                else:
                    stdout_open = False
            if port is not None:
                if self.proc.poll() is not None:
                    break
                if _accepts(host, port):
                    return host, port
                if not stdout_open:
                    time.sleep(PORT_POLL_S)  # stdout closed: nothing to wait on but the clock
            elif not stdout_open:
                break
        try:  # stdout closed or silent: if the process is exiting, give it a moment to say its code
            code = self.proc.wait(max(1.0, min(5.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            accepted = f" and did not accept on port {port}" if port else ""
            raise NotReady(f"printed no ready line{accepted} within {timeout:g}s")
        raise NotReady(f"exited {code} before ready: {self.stderr_reason()}")

    def _drain_stdout(self):
        with contextlib.suppress(OSError, ValueError):
            while self.proc.stdout.read(65536):
                pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_text(self) -> str:
        """All of stderr so far (complete once the process has exited)."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stderr_tail(self, lines: int = 1) -> str:
        """The last non-empty stderr lines, joined by `` | ``: the reason a report shows."""
        tail = [line.strip() for line in self.stderr_text().splitlines() if line.strip()][-lines:]
        return " | ".join(tail) or "(no output on stderr)"

    def stderr_reason(self) -> str:
        """Why it failed: its first error line (the cause: a supervisor's last line may only say
        "see the line above", with other workers' lines between) and its last line."""
        lines = [line.strip() for line in self.stderr_text().splitlines() if line.strip()]
        errors = [line for line in lines if " ERROR " in line or "Error" in line]
        if not errors or errors[0] == lines[-1]:
            return self.stderr_tail()
        return f"{errors[0]} | {lines[-1]}"

    def terminate(self, timeout: float) -> int | None:
        """SIGTERM (unless it already exited), wait up to ``timeout``; the exit code, or None
        if it is still running (nothing killed: the caller decides)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the whole process group (by its id, never by name), then reap."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def close(self) -> None:
        """Kill the group and close the pipes and the stderr file."""
        self.kill()
        for stream in (self.proc.stdout, self._stderr):
            with contextlib.suppress(Exception):
                stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
