"""The arbiter against a no-op target (as uvicorn and hypercorn test their supervisors).

Run as a script, this module is the supervised program: an :class:`Arbiter` whose workers only
beat and wait, printing a ready line once they all "accept". The tests start it as a real process
in its own session, signal it, watch its children with psutil, and kill the group at the end.
SIGUSR1 makes a worker stop beating (a stuck loop); SIGUSR2 makes it ask to be recycled.
"""
from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time

import psutil
import pytest

from multiserve.testing.server_process import live_children, wait_for

pytestmark = pytest.mark.timeout(60)

READY = "noop supervisor ready"


# -- the supervised program ----------------------------------------------------------------------

def noop_target(context) -> int:
    """A worker that does nothing but beat; its sleeps are its whole work (no server to wait for)."""
    flags = {"stop": False, "stuck": False}
    signal.signal(signal.SIGTERM, lambda *_: flags.update(stop=True))
    signal.signal(signal.SIGUSR1, lambda *_: flags.update(stuck=True))
    signal.signal(signal.SIGUSR2, lambda *_: setattr(context.slot, "recycle", 1))
    if os.environ.get("NOOP_BOOT_ERROR"):
        from multiserve.supervisor import BOOT_ERROR

        return BOOT_ERROR
    context.slot.ready = 1
    while not flags["stop"]:
        if not flags["stuck"]:
            context.slot.beat_now()
        time.sleep(0.02)
    return 0


def main() -> int:
    import logging

    from multiserve.stop import Stop, stop_on_signals
    from multiserve.supervisor import Arbiter

    logging.basicConfig(level=logging.INFO, format="%(levelname)s [%(process)d] %(message)s")
    workers, timeout = int(sys.argv[1]), float(sys.argv[2])
    stop = Stop()
    arbiter = Arbiter(noop_target, stop=stop, workers=workers, worker_timeout=timeout, grace=2.0)
    try:
        with stop_on_signals(stop):
            arbiter.run(lambda: print(f"{READY} pid={os.getpid()}", flush=True))
    except RuntimeError as exc:
        logging.error("%s", exc)
        return 2
    return 0


# -- the tests -----------------------------------------------------------------------------------

@contextlib.contextmanager
def supervisor(workers=2, timeout=30.0, env=None):
    proc = subprocess.Popen([sys.executable, __file__, str(workers), str(timeout)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def wait_ready(proc, timeout=15.0) -> None:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no ready line"
    assert READY in proc.stdout.readline().decode()


def workers_of(proc) -> set[int]:
    return live_children(proc.pid)


def stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    err = proc.stderr.read().decode()
    assert "Traceback" not in err, err
    return err


def test_starts_the_workers_then_announces_and_stops_them_all():
    with supervisor(workers=3) as proc:
        wait_ready(proc)
        pids = workers_of(proc)
        assert len(pids) == 3
        err = stop(proc)
        for pid in pids:
            assert f"worker {pid} exited with status 0" in err
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_killed_worker_is_replaced_within_a_second():
    with supervisor(workers=2) as proc:
        wait_ready(proc)
        before = workers_of(proc)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        after = wait_for(lambda: (w := workers_of(proc)) - before and len(w) == 2 and w, 5, "a new worker")
        assert time.monotonic() - killed_at < 1.0  # the bound; a reap is one loop turn
        assert victim not in after and before - {victim} <= after
        err = stop(proc)
        assert f"worker {victim} died with signal SIGKILL" in err


def test_a_worker_that_stops_beating_is_killed_after_the_timeout():
    with supervisor(workers=2, timeout=1.0) as proc:
        wait_ready(proc)
        before = workers_of(proc)
        victim = min(before)
        os.kill(victim, signal.SIGUSR1)
        stuck_at = time.monotonic()
        wait_for(lambda: victim not in workers_of(proc) and len(workers_of(proc)) == 2, 10, "the stuck worker replaced")
        assert time.monotonic() - stuck_at >= 0.9  # not before --worker-timeout
        err = stop(proc)
        assert re.search(rf"worker {victim}: event loop silent for [\d.]+s \(--worker-timeout 1.0\)", err), err


def test_ttin_and_ttou_change_the_worker_count():
    with supervisor(workers=2) as proc:
        wait_ready(proc)
        proc.send_signal(signal.SIGTTIN)
        wait_for(lambda: len(workers_of(proc)) == 3, 5, "3 workers")
        for count in (2, 1):  # one at a time: two pending signals of one kind merge into one
            proc.send_signal(signal.SIGTTOU)
            wait_for(lambda: len(workers_of(proc)) == count, 5, f"{count} workers")
        proc.send_signal(signal.SIGTTOU)  # refused: one worker always stays
        err = stop(proc)
        assert "SIGTTIN: 3 workers" in err and "SIGTTOU: 1 workers" in err
        assert "keeping the last worker" in err


def test_reload_starts_the_new_workers_before_draining_the_old():
    with supervisor(workers=2) as proc:
        wait_ready(proc)
        old = workers_of(proc)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not (workers_of(proc) & old) and len(workers_of(proc)) == 2, 10, "a new set of workers")
        err = stop(proc)
        lines = err.splitlines()
        started = [i for i, line in enumerate(lines) if "started worker" in line][2:]  # the new set
        drained = [i for i, line in enumerate(lines) if any(f"draining worker {pid}" in line for pid in old)]
        assert len(started) == 2 and len(drained) == 2
        assert max(started) < min(drained), err


def test_a_worker_asking_to_be_recycled_is_replaced_first():
    with supervisor(workers=1) as proc:
        wait_ready(proc)
        (old,) = workers_of(proc)
        os.kill(old, signal.SIGUSR2)
        wait_for(lambda: (w := workers_of(proc)) and old not in w and len(w) == 1, 10, "the recycled worker replaced")
        err = stop(proc)
        assert f"worker {old} reached --max-requests" in err
        assert err.index("started worker", err.index("reached --max-requests")) < err.index(f"draining worker {old}")


def test_a_worker_that_cannot_boot_stops_the_supervisor():
    with supervisor(workers=2, env={"NOOP_BOOT_ERROR": "1"}) as proc:
        assert proc.wait(15) == 2
        err = proc.stderr.read().decode()
        assert "failed to start" in err and "Traceback" not in err
        assert proc.stdout.read() == b""  # never announced ready


if __name__ == "__main__":
    sys.exit(main())
