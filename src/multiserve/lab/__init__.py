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
    """Run one experiment module, then weigh a timed verdict against how busy the machine was."""
    load = os.getloadavg()[0]
    return weigh_load(module.run(sizes, progress), load, timed=module.TIMED)


def weigh_load(report, load: float, *, timed: bool):
    """A timed verdict on a machine already busy at the start (see ``common.busy_note``) gets the
    note in ``why``; a "does not hold" there becomes "inconclusive": other work taking the cores
    explains a missing speed-up as well as the claim being wrong does."""
    from .common import DOES_NOT_HOLD, INCONCLUSIVE, busy_note

    note = busy_note(load) if timed else ""
    if note:
        report.why += note
        if report.verdict == DOES_NOT_HOLD:
            report.verdict = INCONCLUSIVE
            report.why += "; run it again on an idle machine"
    return report
