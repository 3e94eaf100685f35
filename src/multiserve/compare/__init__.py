"""``multiserve compare``: every engine under the same load, beside plain baselines, as a report.

Modules, in the order a run uses them: ``baselines`` (the plain servers), ``launcher`` (start,
sample, stop a server), ``matrix`` (cells, runs, medians), ``idle`` (the C10K check),
``analysis`` (ratios, winners, verdicts), ``report`` (report.md), ``plots`` (PNGs), ``runner``
(all of it as :func:`run_compare`) and ``cli``.
"""
from .matrix import Cell, LoadSettings, aggregate, plan, run_matrix
from .runner import Options, run_compare

__all__ = ["Cell", "LoadSettings", "Options", "aggregate", "plan", "run_compare", "run_matrix"]
