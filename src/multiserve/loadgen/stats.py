"""Latency histograms: HdrHistogram (the ``hdrhistogram`` package), microsecond resolution.

``HdrHistogram.record_value`` costs about 1 µs in Python, as much as a whole request, so workers
do not call it per reply: they count ``{latency_us: n}`` in a plain dict (one dict update per
reply, or per burst of replies sent together) and :func:`record_counts` moves the dict into a
histogram a few times per second. Histograms cross process boundaries in HdrHistogram's own
compressed encoding and are merged with ``add``, which is exact (same bucket layout everywhere).
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # On a free-threaded CPython (3.13t) hdrhistogram's C extension declares no free-threading
    # support, so importing it turns the GIL back on with a RuntimeWarning. That is allowed here:
    # this is the load generator's process (servers and the lab never import it, issue 13), and
    # the warning would break the one-line errors of `bench` and `tickets rush`.
    warnings.filterwarnings("ignore", message="The global interpreter lock", category=RuntimeWarning)
    from hdrh.histogram import HdrHistogram

# 1 µs .. 1 hour, 3 significant digits: the range and precision wrk2 uses for its latencies.
LOWEST_US = 1
HIGHEST_US = 3600 * 1_000_000
SIGNIFICANT_DIGITS = 3

# The percentiles every report shows: key -> percentile.
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_counts(hist: HdrHistogram, counts: dict[int, int]) -> None:
    """Adds ``{value_us: count}`` to ``hist`` (values clamped into the histogram's range) and
    empties ``counts``."""
    for value, n in counts.items():
        hist.record_value(min(max(value, LOWEST_US), HIGHEST_US), n)
    counts.clear()


def encode(hist: HdrHistogram) -> bytes:
    return hist.encode()


def merge(encoded) -> HdrHistogram:
    """One histogram holding every sample of the encoded histograms (exact)."""
    total = new_histogram()
    for blob in encoded:
        if blob:
            total.decode_and_add(blob)
    return total


def summary(hist: HdrHistogram) -> dict[str, int]:
    """``{p50, p90, p99, p999, max}`` in µs; all zero for an empty histogram."""
    if hist.get_total_count() == 0:
        return {**{key: 0 for key in PERCENTILES}, "max": 0}
    out = {key: int(hist.get_value_at_percentile(p)) for key, p in PERCENTILES.items()}
    out["max"] = int(hist.get_max_value())
    return out
