"""Confidence intervals of a cell's req/s, and the rule that turns two of them into a claim.

Method: a Student-t interval on the mean of the cell's runs (each run is a fresh server under a
fresh load, and the runs of all cells are interleaved, so the runs of one cell are independent
samples of what a user would measure). With R runs the half-width is t(0.975, R-1) * s / sqrt(R);
three runs give t = 4.30, so a claim needs the cells to differ by several run-to-run spreads.
A winner is named only when its interval lies wholly above the runner-up's: two 95% intervals
that do not overlap are a stricter test than a 5% two-sample test, which is the point (a verdict
must survive an A/A run: the same server twice is never a winner over itself).
"""
from __future__ import annotations

import math
import statistics

CONFIDENCE = 0.95
# Two-sided 95% quantiles of Student's t, t(0.975, df) for df = 1..30 (any statistics table,
# e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2); beyond 30 the normal quantile is within 2%.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z_975 = 1.960


def t_quantile(df: int) -> float:
    if df < 1:
        raise ValueError("a t interval needs at least two samples")
    return T_975[df - 1] if df <= len(T_975) else Z_975


def mean_interval(samples: list[float]) -> tuple[float, float] | None:
    """The 95% t-interval ``(low, high)`` of the mean of ``samples``; None for fewer than two."""
    values = [float(x) for x in samples if x is not None]
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return (max(0.0, mean - half), mean + half)  # a rate is never negative


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def clears(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` lies wholly above ``b``: the only case in which ``a`` is called faster."""
    return a[0] > b[1]
