"""``multiserve compare``: every engine under the same load, beside plain baselines, as a report.

Modules, in the order a run uses them: ``baselines`` (the plain servers), ``launcher`` (start,
sample, stop a server, on :mod:`multiserve.launch`), ``matrix`` (cells, runs), ``stats``
(confidence intervals), ``idle`` (the C10K check), ``analysis`` (ratios, verdicts), ``report``
(report.md), ``plots`` (PNGs), ``runner`` (all of it as :func:`run_compare`) and ``cli``.

The names below are imported lazily, so ``python -m multiserve.compare.baselines`` does not
import its own module twice (runpy's warning) through this package.
"""
import importlib

_EXPORTS = {"Cell": "matrix", "LoadSettings": "matrix", "aggregate": "matrix", "plan": "matrix",
            "run_matrix": "matrix", "Options": "runner", "run_compare": "runner"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
