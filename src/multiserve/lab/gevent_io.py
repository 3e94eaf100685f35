"""``python -m multiserve.lab.gevent_io COUNT SECONDS``: the ``io`` experiment's gevent variant.

Run in its own process because monkey-patching is process-wide: it must not leak into the lab.
Patches first, then spawns COUNT greenlets that each call the ordinary blocking ``time.sleep``
(cooperative once patched), joins them all, and prints ``{"seconds": ...}`` measured in here
(so the interpreter's start-up is not counted).
"""
from multiserve.engines.gevent_engine import patch

patch()

import json  # noqa: E402  (after patching, on purpose)
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402


def main(count: int, seconds: float) -> float:
    start = time.perf_counter()
    greenlets = [gevent.spawn(time.sleep, seconds) for _ in range(count)]
    gevent.joinall(greenlets, raise_error=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    print(json.dumps({"seconds": main(int(sys.argv[1]), float(sys.argv[2]))}))
