"""multiserve.lockdep: real threads, real locks; the runner as a real subprocess with a timeout."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from multiserve.lockdep import Checker, Deadlock, DeadlockError, Inversion
from multiserve.lockdep.__main__ import GRACE_SECONDS


def opposite_order(checker, *, overlap: bool):
    """Thread one takes a then b, thread two b then a; with ``overlap`` both hold their first lock
    before either takes its second (a certain deadlock), else they run one after the other."""
    a, b = checker.Lock(name="a"), checker.Lock(name="b")
    barrier = threading.Barrier(2, timeout=10)
    outcome = {}

    def take(first, second):
        try:
            with first:
                if overlap:
                    barrier.wait()
                with second:
                    outcome[threading.current_thread().name] = "done"
        except DeadlockError as exc:
            outcome[threading.current_thread().name] = exc

    threads = [threading.Thread(target=take, args=pair, name=name, daemon=True)
               for name, pair in (("one", (a, b)), ("two", (b, a)))]
    for t in threads:
        t.start()
        if not overlap:
            t.join(10)
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "lockdep let the threads hang"
    return outcome


def test_deadlock_is_reported_and_broken():
    seen = []
    checker = Checker(poll=0.05, on_report=seen.append)
    start = time.monotonic()
    outcome = opposite_order(checker, overlap=True)
    assert time.monotonic() - start < 5
    errors = [v for v in outcome.values() if isinstance(v, DeadlockError)]
    assert len(errors) == 1 and sorted(map(str, outcome.values())).count("done") == 1
    (deadlock,) = checker.deadlocks
    assert errors[0].deadlock is deadlock and deadlock in seen
    assert sorted(deadlock.locks) == ["a", "b"] and sorted(deadlock.threads) == ["one", "two"]
    for link in deadlock.links:
        assert {link.holds, link.waits_for} == {"a", "b"}
        assert link.held_at.text == "with first:" and link.wait_at.text == "with second:"
    text = deadlock.describe()
    assert "DEADLOCK" in text and "holds a" in text and "waits for b" in text and "test_lockdep.py" in text


def test_inversion_is_flagged_in_a_run_that_did_not_deadlock():
    checker = Checker()
    outcome = opposite_order(checker, overlap=False)
    assert outcome == {"one": "done", "two": "done"}
    assert checker.deadlocks == []
    (inversion,) = checker.inversions
    assert isinstance(inversion, Inversion)
    assert sorted(inversion.locks) == ["a", "b"] and sorted(inversion.threads) == ["one", "two"]
    assert "possible lock inversion" in inversion.describe()


def test_one_order_reports_nothing():
    checker = Checker()
    a = checker.Lock()
    b = checker.Lock()
    assert (a.name, b.name) == ("a", "b")  # named after the assignment on their line

    def both():
        for _ in range(100):
            with a, b:
                pass

    threads = [threading.Thread(target=both) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert checker.inversions == [] and checker.deadlocks == []


class Holder:
    def __init__(self, checker):
        self.lock = checker.Lock()


def test_locks_made_on_one_line_or_in_a_list_get_names_of_their_own():
    checker = Checker()
    a = checker.Lock(); b = checker.Lock()  # noqa: E702 (the point: two locks on one line)
    c, d = checker.Lock(), checker.RLock()
    pair = [checker.Lock(), checker.Lock()]
    locks = [checker.Lock() for _ in range(3)]
    by_key = {key: checker.Lock() for key in ("in", "out")}
    pool = []
    for _ in range(2):
        pool.append(checker.Lock())
    first, second = Holder(checker), Holder(checker)
    line = sys._getframe().f_lineno + 1
    loose = [print(end="") or checker.Lock() for _ in range(2)]  # no name to read: line and column
    assert [x.name for x in (a, b, c, d)] == ["a", "b", "c", "d"]
    assert [x.name for x in pair] == ["pair[0]", "pair[1]"]
    assert [x.name for x in locks] == ["locks[0]", "locks[1]", "locks[2]"]
    assert [x.name for x in by_key.values()] == ["by_key['in']", "by_key['out']"]
    assert [x.name for x in pool] == ["pool[0]", "pool[1]"]
    assert (first.lock.name, second.lock.name) == ("self.lock", "self.lock#2")
    column = "    loose = [print(end=\"\") or ".__len__()
    assert [x.name for x in loose] == [f"lock@test_lockdep.py:{line}:{column}", f"lock@test_lockdep.py:{line}:{column}#2"]
    everything = [a, b, c, d, *pair, *locks, *by_key.values(), *pool, first.lock, second.lock, *loose]
    assert len({x.name for x in everything}) == len(everything)


def test_a_cycle_through_a_list_of_locks_reads_element_by_element():
    """The issue's report said `locks -> locks -> locks`: each lock of the cycle must be named apart."""
    checker = Checker()
    locks = [checker.Lock() for _ in range(3)]
    for k in range(3):  # 0 -> 1, 1 -> 2, 2 -> 0
        with locks[k], locks[(k + 1) % 3]:
            pass
    (inversion,) = checker.inversions
    assert sorted(inversion.locks) == ["locks[0]", "locks[1]", "locks[2]"]
    assert "locks[2] -> locks[0]" in inversion.describe() or "locks[0] -> locks[1]" in inversion.describe()


def test_a_longer_cycle_is_found():
    checker = Checker()
    x, y, z = checker.Lock(name="x"), checker.Lock(name="y"), checker.Lock(name="z")
    for first, second in ((x, y), (y, z)):
        with first, second:
            pass
    assert checker.inversions == []
    with z, x:
        pass
    (inversion,) = checker.inversions
    assert sorted(inversion.locks) == ["x", "y", "z"]


def test_taking_a_held_lock_again_is_a_deadlock_at_once():
    checker = Checker()
    lock = checker.Lock(name="lock")
    with lock:
        with pytest.raises(DeadlockError) as caught:
            lock.acquire()
    assert isinstance(caught.value.deadlock, Deadlock) and caught.value.deadlock.locks == ("lock",)
    assert not lock.locked()


def test_rlock_reentry_timeouts_and_conditions_behave_like_threading():
    checker = Checker()
    with checker.installed():
        r = threading.RLock()
        plain = threading.Lock()
        condition = threading.Condition(plain)
    assert type(r).__name__ == "TrackedRLock" and threading.Lock is not type(plain)
    with r:
        with r:
            assert r._is_owned()
    assert not r._is_owned()
    got = []
    holder = threading.Thread(target=lambda: (plain.acquire(), got.append(1)))
    holder.start()
    holder.join(5)
    assert plain.locked() and plain.acquire(timeout=0.05) is False and plain.acquire(False) is False
    plain.release()  # a plain Lock may be released by another thread
    with condition:
        assert condition.wait(0.01) is False
    assert checker.inversions == [] and checker.deadlocks == []


def test_stdlib_locks_are_not_tracked():
    checker = Checker()
    with checker.installed():
        event = threading.Event()
        mine = threading.Lock()
    assert type(event._cond._lock).__name__ != "TrackedLock"
    assert type(mine).__name__ == "TrackedLock"
    assert threading.Lock().__class__.__name__ != "TrackedLock"  # uninstalled afterwards


def run_script(tmp_path, body, timeout=30):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(body))
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "multiserve.lockdep", str(script)], capture_output=True, text=True,
                         timeout=timeout)
    return out, time.monotonic() - start


DEADLOCKING = """
    import threading
    lock_a = threading.Lock()
    lock_b = threading.Lock()
    both = threading.Barrier(2)
    def one():
        lock_a.acquire(); both.wait(); lock_b.acquire()   # never released: no `with`
    def two():
        lock_b.acquire(); both.wait(); lock_a.acquire()
    threads = [threading.Thread(target=f) for f in (one, two)]
    for t in threads: t.start()
    for t in threads: t.join()
    print("unreachable")
"""


def test_runner_reports_the_deadlock_and_ends_within_the_bound(tmp_path):
    out, took = run_script(tmp_path, DEADLOCKING)
    assert out.returncode == 3, out.stderr
    assert took < GRACE_SECONDS + 15  # interpreter start-up + poll + grace, far below a hang
    assert "DEADLOCK" in out.stderr and "lock_a" in out.stderr and "lock_b" in out.stderr
    assert "Thread-1 (one)" in out.stderr and "Thread-2 (two)" in out.stderr
    assert "lock_a.acquire(); both.wait(); lock_b.acquire()" in out.stderr
    assert "Traceback" not in out.stderr and "unreachable" not in out.stdout


def test_runner_flags_an_inversion_and_lets_the_program_finish(tmp_path):
    out, _ = run_script(tmp_path, """
        import threading
        lock_a, lock_b = threading.Lock(), threading.RLock()
        def one():
            with lock_a:
                with lock_b: pass
        def two():
            with lock_b:
                with lock_a: pass
        for f in (one, two):
            t = threading.Thread(target=f); t.start(); t.join()
        print("finished")
    """)
    assert out.returncode == 4, out.stderr
    assert out.stdout.strip() == "finished"
    assert "possible lock inversion" in out.stderr and "0 deadlock(s), 1 possible inversion(s)" in out.stderr


def test_runner_names_locks_made_on_one_line_apart(tmp_path):
    out, _ = run_script(tmp_path, """
        import threading
        a = threading.Lock(); b = threading.Lock()
        with a:
            with b: pass
        with b:
            with a: pass
    """)
    assert out.returncode == 4, out.stderr
    assert "a -> b -> a" in out.stderr or "b -> a -> b" in out.stderr, out.stderr


def test_runner_passes_a_clean_program_through(tmp_path):
    out, _ = run_script(tmp_path, """
        import sys, threading
        lock = threading.Lock()
        with lock:
            print("args", sys.argv[1:])
        sys.exit(5)
    """)
    assert out.returncode == 5 and out.stdout.strip() == "args []"
    assert "0 deadlock(s), 0 possible inversion(s)" in out.stderr


def test_runner_missing_script_is_one_line():
    out = subprocess.run([sys.executable, "-m", "multiserve.lockdep", "/nonexistent/prog.py"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and out.stderr.strip() == "lockdep: no such script: /nonexistent/prog.py"


def test_a_site_in_json_names_no_checkouts_folder():
    """A report committed to docs/ (lab all's JSON) must not carry the machine's path."""
    import multiserve.lab.deadlock as deadlock
    from multiserve.lockdep.report import Site

    assert Site(deadlock.__file__, 1).to_json()["file"] == "multiserve/lab/deadlock.py"
    assert Site("/elsewhere/app.py", 3).to_json()["file"] == "/elsewhere/app.py"
