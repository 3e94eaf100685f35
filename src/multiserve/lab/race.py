"""``race``: N threads (or processes) each doing ``size`` read, pause, write updates of a shared
counter, with and without a lock; and the plain ``n -= 1`` without a pause.

The pause is ``time.sleep(0)``: it does nothing but release the GIL, the smallest possible window
between the read and the write (a real program's window is an IO call or a slow computation).
Lost updates = expected - final. The plain ``n -= 1`` runs 100 x ``size`` times per thread:
its window is between bytecodes, so with the GIL it is rarely (on CPython 3.10+, with ints, never)
hit, and that rarity is the danger: code that passes every test and is still wrong. Without the
GIL (a free-threaded 3.13t) the threads run those bytecodes at once and most decrements are lost.
"""
from __future__ import annotations

import dis
import multiprocessing
import threading
import time

from .common import DOES_NOT_HOLD, HOLDS, Report, Sizes, gil_enabled

TIMED = False  # are its verdicts about speed (then a busy machine is noted)?
NAME = "race"
CLAIM = ("without a lock, concurrent read-modify-write loses updates (the GIL does not make `n -= 1` safe); "
         "with a lock none are lost")
SIZES = {"default": Sizes(count=8, size=2000), "quick": Sizes(count=4, size=300)}
COLUMNS = ("variant", "lock", "expected", "final", "lost_updates")
PLAIN_FACTOR = 100  # the plain `n -= 1` is cheap, so it gets many more tries to lose one
PAUSE = 0  # seconds: sleep(0) only hands over the GIL


class Counter:
    n = 0


def paused_increments(counter, times, lock):
    for _ in range(times):
        if lock is None:
            value = counter.n
            time.sleep(PAUSE)
            counter.n = value + 1
        else:
            with lock:
                value = counter.n
                time.sleep(PAUSE)
                counter.n = value + 1


def _threads(count, target, args):
    workers = [threading.Thread(target=target, args=args) for _ in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def threads_paused(count, size, locked):
    counter = Counter()
    _threads(count, paused_increments, (counter, size, threading.Lock() if locked else None))
    return counter.n


def _value_increments(value, times, locked):
    for _ in range(times):
        if locked:
            with value.get_lock():
                current = value.value
                time.sleep(PAUSE)
                value.value = current + 1
        else:  # each .value access takes the Value's lock, but the read-modify-write is not one step
            current = value.value
            time.sleep(PAUSE)
            value.value = current + 1


def processes_paused(count, size, locked):
    value = multiprocessing.Value("q", 0)
    workers = [multiprocessing.Process(target=_value_increments, args=(value, size, locked)) for _ in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if any(w.exitcode != 0 for w in workers):
        raise RuntimeError("a race worker process failed")
    return value.value


n = 0  # the tutorials' global counter


def decrement(times):
    global n
    for _ in range(times):
        n -= 1


def threads_plain(count, size):
    global n
    n = count * size
    _threads(count, decrement, (size,))
    return count * size - n  # "final" counts the decrements that took effect


def bytecode() -> str:
    """The instructions of ``n -= 1`` in ``decrement``: from loading ``n`` to storing it."""
    ops = [i for i in dis.get_instructions(decrement)]
    first = next(k for k, i in enumerate(ops) if i.argval == "n")
    last = max(k for k, i in enumerate(ops) if i.argval == "n")
    return "; ".join(f"{i.opname} {i.argrepr}".strip() for i in ops[first:last + 1])


def run(sizes: Sizes, progress) -> Report:
    count, size = sizes.count, int(sizes.size)
    variants = [
        ("threads, read-pause-write", False, lambda: threads_paused(count, size, False), count * size),
        ("threads, read-pause-write", True, lambda: threads_paused(count, size, True), count * size),
        ("processes, Value, read-pause-write", False, lambda: processes_paused(count, size, False), count * size),
        ("processes, Value, read-pause-write", True, lambda: processes_paused(count, size, True), count * size),
        ("threads, plain n -= 1", False, lambda: threads_plain(count, size * PLAIN_FACTOR), count * size * PLAIN_FACTOR),
    ]
    rows = []
    for k, (variant, lock, fn, expected) in enumerate(variants):
        progress(f"{variant}{' + lock' if lock else ''}", k, len(variants))
        final = fn()
        rows.append({"variant": variant, "lock": lock, "workers": count, "expected": expected, "final": final,
                     "lost_updates": expected - final})
    progress("done", len(variants), len(variants))
    rows[-1]["bytecode"] = bytecode()
    verdict, why = judge(rows)
    return Report(NAME, CLAIM, verdict, why, rows, COLUMNS)


def plain_explained(plain: dict, gil: bool) -> str:
    """Why the plain ``n -= 1`` lost what it lost, by the GIL's state measured in this process."""
    steps = f"{plain['bytecode']}: separate steps"
    lost, expected = plain["lost_updates"], plain["expected"]
    if not gil:
        if lost:
            return (f" ({steps}. This Python runs without the GIL, so threads run them at the same time on "
                    f"different cores: {100 * lost / expected:.0f}% of the plain decrements were lost)")
        return (f" ({steps}. This Python runs without the GIL: none were lost this time, but nothing keeps "
                "two threads from interleaving them)")
    if lost:
        return (f" ({steps}, and even with the GIL a thread switch fell between them "
                f"{lost} times: older CPythons and an __isub__ in Python split them)")
    return (f" ({steps}. CPython 3.10+ with the GIL switches threads only at calls and backward jumps, so on "
            "ints they happen not to be split; that is an implementation detail, not a guarantee: older or "
            "free-threaded CPythons, or an __isub__ in Python, do split them)")


def judge(rows) -> tuple[str, str]:
    paused_unlocked = [r for r in rows[:4] if not r["lock"]]
    locked = [r for r in rows if r["lock"]]
    plain = rows[-1]
    facts = ("without a lock " + " and ".join(f"{r['variant'].split(',')[0]} lost {r['lost_updates']} of "
                                               f"{r['expected']}" for r in paused_unlocked)
             + f"; with one, {sum(r['lost_updates'] for r in locked)} lost; plain n -= 1 lost "
             f"{plain['lost_updates']} of {plain['expected']}")
    rare = plain_explained(plain, gil_enabled())
    if all(r["lost_updates"] > 0 for r in paused_unlocked) and all(r["lost_updates"] == 0 for r in locked):
        return HOLDS, facts + rare
    return DOES_NOT_HOLD, facts + rare


def figure(report: Report):
    """The bar chart: % of updates lost per variant, each bar labelled in % with its count."""
    from .plots import bars_figure, plain_number

    rows = report.results
    names = [f"{r['variant'].replace(', ', chr(10))}{chr(10) + '+ lock' if r['lock'] else ''}" for r in rows]
    percent = [100 * r["lost_updates"] / r["expected"] for r in rows]
    # labels in the axis's unit (%), the count beside it: "97.3% (584 of 600)"
    labels = [f"{plain_number(p)}%\n({r['lost_updates']:,} of {r['expected']:,})" for p, r in zip(percent, rows)]
    return bars_figure(names, percent, ylabel="updates lost (%)", title="race: lost updates", labels=labels)


def plot(report: Report, path) -> None:
    from .plots import save

    save(figure(report), path)
