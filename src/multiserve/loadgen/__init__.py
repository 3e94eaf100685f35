"""The load generator behind ``multiserve bench`` (and ``compare`` and the lab).

    from multiserve.loadgen import LoadSpec, run_load
    result = run_load(LoadSpec(port=port, connections=16, duration=5.0))
    result.requests, result.rps, result.errors, result.mismatches, result.latency_us

Closed loop by default; ``rate=`` switches to open loop with coordinated-omission correction.
Every reply is checked against the request it answers; latencies go into an HdrHistogram (µs).
"""
from .result import LoadResult
from .runner import run_load
from .spec import LoadSpec

__all__ = ["LoadResult", "LoadSpec", "run_load"]
