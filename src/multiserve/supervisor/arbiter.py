"""The arbiter: forks workers, reaps them, replaces the dead and the stuck, reloads and drains.

gunicorn's ``arbiter.py`` is the model. Stopping comes from the serve entry's
:class:`~multiserve.stop.Stop` (set by SIGTERM/SIGINT there, or by a caller): every worker
drains (``--grace``), leftovers get SIGKILL. The supervisor's own control signals are recorded by
handlers that do nothing else (and write to a pipe that ends the main loop's wait); the loop
dispatches each to ``handle_<name>()``:

=========  ===================================================================================
SIGHUP     graceful reload: start a new set of workers, drain the old set once the new one accepts
SIGTTIN    one more worker
SIGTTOU    one worker fewer (the oldest is drained; never below one)
SIGCHLD    reap at once, so a dead worker is replaced within one loop turn
=========  ===================================================================================

Replacing always starts the successor first: an *outgoing* worker (reload, or it asked to be
recycled after ``--max-requests``) keeps serving until enough new workers accept, and only then
gets SIGTERM (and hands its idle connections to them). Workers beat from their event loop into a
shared :class:`~.slots.SlotTable`; one silent for ``worker_timeout`` is replaced: its successor
starts at once, and it is killed (SIGKILL) unless its loop beats again within PROBATION
heartbeats, in which case it is drained like a recycled worker (its connections handed off).

What the caller provides is ``target(context) -> exit code``: it runs in the forked child, which
exits with what it returns (``os._exit``: never back into the supervisor's code). A target that
cannot start returns :data:`BOOT_ERROR`, which stops the supervisor with RuntimeError (as
gunicorn halts on a worker boot error) instead of forking it again and again.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import select
import signal
import time

from ..stop import STOP_SIGNALS, drain_pipe
from .slots import Slot, SlotTable

log = logging.getLogger(__name__)

# gunicorn's WORKER_BOOT_ERROR: a worker that cannot start (bind, service open()) exits with it.
BOOT_ERROR = 3
# The main loop's longest wait: bounds how late a stuck worker or a recycle request is noticed
# (100 ms: a tenth of the 1 s replacement bound). Deaths and signals wake it at once.
TICK = 0.1
# After --grace a draining worker has aborted its connections itself; this long again for it to
# exit before SIGKILL (its pool shutdown and a final log line).
KILL_MARGIN = 1.0
# Heartbeats a worker past --worker-timeout has to beat again before SIGKILL: its loop was only
# slow (a long call on the loop), so it can still hand its connections to its successor. Two: one
# beat may be in flight when the supervisor looks; at most half a --worker-timeout (the beat
# interval is at most a quarter of it), so a dead loop is killed within 1.5 x --worker-timeout.
PROBATION = 2
SIGNAL_NAMES = {signal.SIGHUP: "hup", signal.SIGTTIN: "ttin", signal.SIGTTOU: "ttou", signal.SIGCHLD: "chld"}
# Ignored in workers: the supervisor alone acts on them (the default action of SIGTTIN/SIGTTOU
# would stop a worker, SIGHUP's would kill it).
WORKER_IGNORED = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


@dataclasses.dataclass
class WorkerContext:
    """What a target gets in the forked child."""

    slot: Slot
    index: int
    table: SlotTable
    supervisor_pid: int
    heartbeat_interval: float

    def supervisor_gone(self) -> bool:
        """True once the supervisor died (the worker was re-parented): time to stop."""
        return os.getppid() != self.supervisor_pid


@dataclasses.dataclass
class Worker:
    """A worker as the supervisor tracks it."""

    pid: int
    index: int
    born: float
    outgoing: bool = False  # to be drained once its successors accept
    deadline: float | None = None  # set when draining: SIGKILL after it
    killed: bool = False
    generation: int = 0  # SIGHUP starts the next one
    silent_at: float | None = None  # its loop missed --worker-timeout: killed unless it beats again


def describe_status(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"


class Arbiter:
    """Keeps ``workers`` copies of ``target`` running until ``stop`` is set.

    ``run(ready)`` blocks; it calls ``ready()`` once, when the first full set of workers accepts,
    and returns after every worker has exited. ``totals`` then holds the workers' summed
    (connections, requests, errors). Not thread-safe: one arbiter per process, on the main thread
    (it installs signal handlers and restores them on return).
    """

    def __init__(self, target, *, stop, workers: int, worker_timeout: float, grace: float,
                 max_workers: int | None = None):
        self.target = target
        self.stop = stop
        self.num_workers = workers
        self.worker_timeout = worker_timeout
        self.grace = grace
        # Room for SIGTTIN and for a reload's two sets at once; 64 at least (a worker count well
        # past any core count this runs on), 4 x workers past that.
        self.table = SlotTable(max(64, 4 * workers))
        self.max_workers = max_workers or len(self.table.slots) // 2
        self.heartbeat_interval = min(1.0, worker_timeout / 4)  # scheduling jitter never looks stuck
        self.workers: dict[int, Worker] = {}
        self.signals: list[int] = []
        self.stopping = False
        self.announced = False
        self.boot_failed = False
        self.totals = [0, 0, 0]
        self.generation = 0
        self.pid = os.getpid()

    # -- running -------------------------------------------------------------------------------
    def run(self, ready) -> None:
        self._install_signals()
        try:
            while not self.stopping:
                if self.stop.is_set():
                    log.info("supervisor %d: %s: draining %d workers", self.pid, self.stop.reason, len(self.workers))
                    self.stopping = True
                    break
                self.manage_workers()
                if not self.announced and self._ready_count() >= self.num_workers:
                    self.announced = True
                    log.info("supervisor %d: %d workers accept: %s", self.pid, self.num_workers, self._pids())
                    ready()
                self._wait(TICK)
                self.reap()
                if self.boot_failed:
                    raise RuntimeError("a worker failed to start (see the line above); stopping")
                while self.signals:
                    getattr(self, "handle_" + SIGNAL_NAMES[self.signals.pop(0)])()
                self.check_workers()
        finally:
            self._stop_all()
            self._restore_signals()

    def _ready_count(self) -> int:
        slots = self.table.slots
        return sum(1 for w in self._incoming() if slots[w.index].ready)

    def _incoming(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.deadline is None and not w.outgoing]

    def _pids(self) -> str:
        return " ".join(str(pid) for pid in sorted(self.workers))

    # -- signals -------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self._old_handlers = {s: signal.signal(s, self._record) for s in SIGNAL_NAMES}

    def _record(self, signum, frame) -> None:
        self.signals.append(signum)
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass

    def _restore_signals(self) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _wait(self, timeout: float) -> None:
        """Sleep until a signal is recorded, the stop is set, or ``timeout`` passes."""
        if self.signals or self.stop.is_set():
            return
        readable, _, _ = select.select([self.wake_r, self.stop.fileno()], [], [], timeout)
        if self.stop.fileno() in readable:
            self.stop.drain()
        if self.wake_r in readable:
            drain_pipe(self.wake_r)

    def handle_hup(self) -> None:
        incoming = self._incoming()
        log.info("supervisor %d: SIGHUP: reloading: starting %d new workers, then draining %d old ones",
                 self.pid, self.num_workers, len(incoming))
        self.generation += 1
        for worker in incoming:
            worker.outgoing = True

    def handle_ttin(self) -> None:
        if self.num_workers >= self.max_workers:
            log.warning("supervisor %d: SIGTTIN: already at the most workers (%d)", self.pid, self.max_workers)
            return
        self.num_workers += 1
        log.info("supervisor %d: SIGTTIN: %d workers", self.pid, self.num_workers)

    def handle_ttou(self) -> None:
        if self.num_workers <= 1:
            log.warning("supervisor %d: SIGTTOU: keeping the last worker", self.pid)
            return
        self.num_workers -= 1
        log.info("supervisor %d: SIGTTOU: %d workers", self.pid, self.num_workers)

    def handle_chld(self) -> None:
        """Reaping happens on every loop turn; the signal only ended the wait early."""

    # -- workers -------------------------------------------------------------------------------
    def manage_workers(self) -> None:
        """Spawn up to the target, drain extras, and drain outgoing workers once replaced."""
        incoming = self._incoming()
        for worker in sorted(incoming, key=lambda w: w.born)[: max(0, len(incoming) - self.num_workers)]:
            self.retire(worker, "one worker fewer")
        for _ in range(self.num_workers - len(incoming)):
            self.spawn()
        slots = self.table.slots
        serving = [w for w in self.workers.values() if w.deadline is None and slots[w.index].ready]
        for worker in list(self.workers.values()):
            if worker.outgoing and worker.deadline is None and worker.silent_at is None \
                    and self._replaced(worker, serving):
                self.retire(worker, "its successor accepts")

    def _replaced(self, worker: Worker, serving: list[Worker]) -> bool:
        """True once a full set of workers of the current generation accepts without it: those
        staying, and those younger than it even if outgoing in turn already (a small
        --max-requests spends a successor's budget within one tick). After SIGHUP only the new
        generation counts; a recycled worker waits for its own successor, not for every worker
        to be replaced. Its connections are then handed to them."""
        return sum(1 for w in serving if w is not worker and w.generation == self.generation
                   and (w.born > worker.born or not w.outgoing)) >= self.num_workers

    def spawn(self) -> None:
        index = self.table.take()
        if index is None:
            log.warning("supervisor %d: no free worker slot; not starting a worker", self.pid)
            return
        pid = os.fork()
        if pid == 0:
            self._run_child(index)  # never returns
        self.workers[pid] = Worker(pid, index, time.monotonic(), generation=self.generation)
        log.info("supervisor %d: started worker %d", self.pid, pid)

    def _run_child(self, index: int) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (*SIGNAL_NAMES, *STOP_SIGNALS):
                signal.signal(signum, signal.SIG_DFL)
            for signum in WORKER_IGNORED:
                signal.signal(signum, signal.SIG_IGN)
            os.close(self.wake_r)
            os.close(self.wake_w)
            self.stop.close()  # the supervisor's: a worker that serves makes its own
            context = WorkerContext(self.table.slots[index], index, self.table, self.pid, self.heartbeat_interval)
            code = self.target(context)
        except BaseException as exc:  # never fall back into the supervisor's loop
            log.error("worker %d: %s: %s", os.getpid(), type(exc).__name__, exc)
        finally:
            logging.shutdown()
            os._exit(code)

    def retire(self, worker: Worker, why: str) -> None:
        """SIGTERM: the worker stops accepting, finishes in-flight requests and exits."""
        worker.deadline = time.monotonic() + self.grace + KILL_MARGIN
        self.table.slots[worker.index].handoff = 0 if self.stopping else 1
        log.info("supervisor %d: draining worker %d (%s)", self.pid, worker.pid, why)
        _signal(worker.pid, signal.SIGTERM)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            slot = self.table.slots[worker.index]
            counts = slot.counts()
            served = "connections={} requests={} errors={}".format(*counts)
            if slot.handed_off or slot.adopted or slot.closed_on_stop:
                served += f"; handed off {slot.handed_off}, closed {slot.closed_on_stop} on stop, adopted {slot.adopted}"
            self.table.give_back(worker.index)
            for i, n in enumerate(counts):
                self.totals[i] += n
            if code == BOOT_ERROR:
                self.boot_failed = True
                log.error("supervisor %d: worker %d failed to start", self.pid, pid)
            elif worker.deadline is not None or self.stopping:
                log.info("supervisor %d: worker %d exited with %s (%s)", self.pid, pid, describe_status(code), served)
            else:
                log.warning("supervisor %d: worker %d died with %s (%s); replacing it",
                            self.pid, pid, describe_status(code), served)

    def check_workers(self) -> None:
        """Kill the stuck and the overdue; mark workers that asked to be recycled."""
        now = time.monotonic()
        for worker in list(self.workers.values()):
            slot = self.table.slots[worker.index]
            if worker.killed:
                continue
            if worker.deadline is not None:
                if now > worker.deadline:
                    log.warning("supervisor %d: worker %d still busy %.1fs after --grace: killing it",
                                self.pid, worker.pid, KILL_MARGIN)
                    self._kill(worker)
            elif worker.silent_at is not None:
                if slot.beat > worker.silent_at:
                    worker.silent_at = None  # drained once its successor accepts (manage_workers)
                    log.info("supervisor %d: worker %d: event loop answers again: draining it once its "
                             "successor accepts", self.pid, worker.pid)
                elif now > worker.silent_at + PROBATION * self.heartbeat_interval:
                    log.error("supervisor %d: worker %d: event loop still silent: killing it", self.pid, worker.pid)
                    self._kill(worker)
            elif now - slot.beat > self.worker_timeout:
                log.error("supervisor %d: worker %d: event loop silent for %.1fs (--worker-timeout %.1f): "
                          "replacing it; killed unless its loop answers within %.1fs", self.pid, worker.pid,
                          now - slot.beat, self.worker_timeout, PROBATION * self.heartbeat_interval)
                worker.outgoing = True  # its successor starts now
                worker.silent_at = now
            elif slot.recycle and not worker.outgoing:
                log.info("supervisor %d: worker %d reached --max-requests: replacing it", self.pid, worker.pid)
                worker.outgoing = True

    def _kill(self, worker: Worker) -> None:
        worker.killed = True
        if worker.deadline is None:
            worker.deadline = time.monotonic()  # no longer counts as serving: replace it now
        _signal(worker.pid, signal.SIGKILL)

    def _stop_all(self) -> None:
        """Drain every worker: SIGTERM, wait for them (up to --grace and the margin), SIGKILL the rest."""
        self.stopping = True
        for worker in list(self.workers.values()):
            if worker.deadline is None:
                self.retire(worker, "stopping")
        while self.workers:
            self._wait(TICK)
            self.signals.clear()  # a reload or a resize changes nothing now: the drain is under way
            self.reap()
            self.check_workers()


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
