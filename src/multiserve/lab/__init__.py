"""``multiserve lab``: the classic concurrency experiments, each measured and judged on this machine.

``EXPERIMENTS`` maps a name to its module (imported lazily); each module states its claim, runs
the experiment correctly (everything joined before the clock stops) and returns a ``Report``.
"""
from __future__ import annotations

import importlib
import os

EXPERIMENTS = {
    "cpu": "multiserve.lab.cpu",
    "io": "multiserve.lab.io_wait",
    "spawn": "multiserve.lab.spawn",
    "race": "multiserve.lab.race",
    "deadlock": "multiserve.lab.deadlock",
    "semaphore": "multiserve.lab.semaphore",
    "event": "multiserve.lab.event",
    "pool": "multiserve.lab.pool",
}


def experiment(name: str):
    """The module of experiment ``name``; KeyError if there is none."""
    return importlib.import_module(EXPERIMENTS[name])


def run(module, sizes, progress):
    """Run one experiment module; for timed ones, note in ``why`` a machine already busy at the start."""
    from .common import busy_note

    load = os.getloadavg()[0]
    report = module.run(sizes, progress)
    if module.TIMED:
        report.why += busy_note(load)
    return report
