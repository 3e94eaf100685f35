"""An engine run in-process, stopped by ``Stop.set()`` from another thread: no signal involved.

    python -m multiserve.testing.in_process ENGINE

Runs ``multiserve.serve`` on the main thread with a :class:`~multiserve.stop.Stop`; once ready,
a client thread sends a few requests (pipelined and one by one), checks the replies, and sets the
stop. Prints one JSON line: the client's findings and the stats ``serve`` returned. Its own
process, so that an engine that patches or forks the process (gevent, process, hybrid) cannot
disturb the test runner.
"""
from __future__ import annotations

import json
import socket
import sys
import threading

if __name__ == "__main__" and sys.argv[1:2] == ["gevent"]:
    from gevent import monkey

    monkey.patch_all()

import multiserve  # noqa: E402

REQUESTS = [b"one\n", b"two\n", b"three\n"]


def client(host: str, port: int, stop, found: dict) -> None:
    try:
        with socket.create_connection((host, port), timeout=30) as sock:  # a loaded CI machine
            sock.sendall(b"".join(REQUESTS))  # pipelined
            expected = b"".join(r.upper() for r in REQUESTS)
            got = b""
            while len(got) < len(expected):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += chunk
            sock.sendall(b"last\n")
            got += sock.recv(4096)
            found["replies"] = got.decode("latin-1")
    except OSError as exc:
        found["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        stop.set("the test is done")


def main(engine: str) -> int:
    stop = multiserve.Stop()
    found: dict = {}

    def on_ready(host, port):
        threading.Thread(target=client, args=(host, port, stop, found), daemon=True).start()

    stats = multiserve.serve("upper", engine=engine, port=0, workers=1, cpu_workers=0, grace=5,
                             on_ready=on_ready, stop=stop)
    print(json.dumps({"found": found, "stats": stats.as_tuple(), "repr": repr(stats), "reason": stop.reason}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
