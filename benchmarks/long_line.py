"""Seconds to assemble one long line from 64 KiB reads in the line framer (no server, no I/O).

    python benchmarks/long_line.py            # 10, 20, 40, 100 MiB; gives up on one after 30 s

Joining ``partial + data`` on every read made this quadratic (issue 11); a bytearray makes it
linear. Point PYTHONPATH at another checkout's src/ to time that one.
"""
import time

from multiserve.protocol import LineFramer

CHUNK = b"x" * 65536
GIVE_UP_SECONDS = 30


def main() -> None:
    for mib in (10, 20, 40, 100):
        framer = LineFramer(200 << 20)
        started = time.perf_counter()
        for _ in range((mib << 20) // len(CHUNK)):
            framer.feed(CHUNK)
            if time.perf_counter() - started > GIVE_UP_SECONDS:
                break
        lines = framer.feed(b"\n")
        seconds = time.perf_counter() - started
        whole = bool(lines) and len(lines[0]) == (mib << 20) + 1
        print(f"{mib} MiB: {seconds:.3f} s" + ("" if whole else f" (gave up after {GIVE_UP_SECONDS} s)"))


if __name__ == "__main__":
    main()
