"""``multiserve compare``: every engine under the same load, beside plain baselines, as a report.

Modules, in the order a run uses them: ``baselines`` (the plain servers), ``launcher`` (start,
sample, stop a server), ``matrix`` (cells, runs, medians), ``idle`` (the C10K check),
``analysis`` (ratios, winners, verdicts), ``report`` (report.md), ``plots`` (PNGs), ``runner``
(all of it as :func:`run_compare`) and ``cli``.

The public names are imported on first use (PEP 562), not here: importing them eagerly imported
``baselines`` with the package, so ``python -m multiserve.compare.baselines`` found it already
loaded and runpy warned (RuntimeWarning: "found in sys.modules ... prior to execution").
"""
import importlib

_WHERE = {"Cell": "matrix", "LoadSettings": "matrix", "aggregate": "matrix", "plan": "matrix",
          "run_matrix": "matrix", "Options": "runner", "run_compare": "runner"}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
