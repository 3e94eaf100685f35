"""Known answers for ``multiserve compare``: services whose verdict is known before the run.

An A/A run (the same engine twice, under two ``--server`` names) must come out a tie; a known
handicap must come out separated. :class:`Handicap` is the handicap: the upper service plus
about one more request's worth of the asyncio engine's own CPU, burnt inline (not blocking, so
every engine calls it where it calls upper)::

    multiserve compare --engines none --no-baselines --services upper \\
        --server 'plain=multiserve serve --engine asyncio --service upper --port {port}' \\
        --server 'handicapped=multiserve serve --engine asyncio \\
                  --service multiserve.compare.calibration:Handicap --port {port}'

(docs/benchmarks.md records both runs.)
"""
from __future__ import annotations

import time

from ..services.base import Service

# The asyncio engine's server CPU per request for upper, 16-256 connections: 9.0-9.1 µs (the
# pinned C-client runs of issue 11, docs/benchmarks.md).
HANDICAP_S = 9e-6


class Handicap(Service):
    """upper, after burning :data:`HANDICAP_S` of this thread's CPU in pure Python."""

    blocking = False
    expect = "upper"  # what compare checks the replies against

    def handle(self, request, conn):
        clock = time.thread_time
        deadline = clock() + HANDICAP_S
        x = 0
        while clock() < deadline:  # a clock read is ~0.1 µs: the burn overshoots by about that
            x = (x * 31 + 7) & 0xFFFF
        return request.upper()
