"""``python -m multiserve.lockdep [--poll S] script.py [args...]``: run a program under lockdep.

Every report goes to stderr as it is found. Exit status: 3 if a deadlock was found (from then on the
program has ``GRACE_SECONDS`` to finish, or the run is ended: it never hangs), 4 if only potential inversions were found, 2 for bad usage, else the program's own.
"""
from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
import threading
import time

from .checker import POLL_SECONDS, Checker
from .report import Deadlock, DeadlockError

log = logging.getLogger("multiserve.lockdep")
DEADLOCK, INVERSION, USAGE = 3, 4, 2
# After a deadlock was broken, threads that took locks without `with` may still be stuck on them;
# this long (many poll periods) is enough for every thread that can go on to finish.
GRACE_SECONDS = 2.0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m multiserve.lockdep", description=__doc__.splitlines()[0])
    parser.add_argument("--poll", type=float, default=POLL_SECONDS, help="seconds a blocked thread waits "
                        "before it looks for a deadlock (default: %(default)s)")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if not os.path.isfile(args.script):
        log.error("lockdep: no such script: %s", args.script)
        return USAGE
    checker = Checker(poll=args.poll, on_report=_reporter())
    _quiet_deadlock_errors()
    sys.argv = [args.script, *args.args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(args.script)))
    status = 0
    with checker.installed():
        try:
            runpy.run_path(args.script, run_name="__main__")
        except DeadlockError as exc:
            print(f"lockdep: the main thread was stopped: {exc.deadlock.threads}", file=sys.stderr)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finished = _join_threads(GRACE_SECONDS if checker.deadlocks else None)
    print(f"lockdep: {len(checker.deadlocks)} deadlock(s), {len(checker.inversions)} possible inversion(s)",
          file=sys.stderr, flush=True)
    if checker.deadlocks:
        status = DEADLOCK
    elif checker.inversions:
        status = INVERSION
    if not finished:
        _end_run()
    return status


def _reporter():
    """Print each report; after the first deadlock, start the watchdog that bounds the run."""
    watchdog = []

    def report(found):
        print(found.describe(), file=sys.stderr, flush=True)
        if isinstance(found, Deadlock) and not watchdog:
            watchdog.append(threading.Thread(target=_end_after_grace, name="lockdep-watchdog", daemon=True))
            watchdog[0].start()

    return report


def _end_after_grace():
    time.sleep(GRACE_SECONDS)
    _end_run()


def _end_run():
    print("lockdep: threads still blocked after the deadlock; ending the run", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(DEADLOCK)


def _quiet_deadlock_errors():
    """A thread stopped by DeadlockError: one line (the report is already printed), no traceback."""
    default = threading.excepthook

    def hook(args):
        if isinstance(args.exc_value, DeadlockError):
            print(f"lockdep: thread {args.thread.name} was stopped by DeadlockError", file=sys.stderr)
        else:
            default(args)

    threading.excepthook = hook


def _join_threads(timeout) -> bool:
    """Join the program's non-daemon threads (within ``timeout`` in all, if given); all done?"""
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon:
            continue
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread())


if __name__ == "__main__":
    sys.exit(main())
