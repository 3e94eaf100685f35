"""The parts every engine shares, tested without a server: settings, the stop, the accept-error
log, the service base class; and the embedded ``multiserve.serve`` as a user calls it."""
import logging
import signal
import subprocess
import sys
import threading

import pytest

import multiserve
from multiserve.config import SettingError, make_config
from multiserve.engines.acceptor import SUMMARY_SECONDS, AcceptErrorLog
from multiserve.engines.base import ServeStats
from multiserve.services.base import has_async_handle
from multiserve.session import CallPlan


@pytest.mark.parametrize("settings, named", [
    ({"max_line": 0}, "max_line"), ({"threads": 0}, "threads"), ({"port": 70000}, "port"),
    ({"engine": "nope"}, "unknown engine"), ({"idle_timeout": -1}, "idle_timeout"),
    ({"log_level": "loud"}, "log_level"), ({"no_such_setting": 1}, "unknown setting"),
])
def test_every_entry_path_refuses_a_bad_setting_at_once_naming_it(settings, named):
    with pytest.raises(SettingError, match=named):
        make_config(**settings)
    with pytest.raises(ValueError, match=named):  # multiserve.serve: before binding anything
        multiserve.serve("upper", **{"port": 0, **settings})


def test_the_cli_refuses_a_bad_setting_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "multiserve", "serve", "--threads", "0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--threads" in proc.stderr and "Traceback" not in proc.stderr


def test_help_shows_every_default():
    proc = subprocess.run([sys.executable, "-m", "multiserve", "serve", "--help"],
                          capture_output=True, text=True, timeout=30)
    for setting in multiserve.config.SETTINGS:
        assert setting.flag in proc.stdout
    assert proc.stdout.count("(default:") == len(multiserve.config.SETTINGS)


def test_serve_stats_read_well():
    stats = ServeStats(3, 10, 1)
    assert repr(stats) == "ServeStats(connections=3, requests=10, errors=1)"
    assert stats.as_tuple() == (3, 10, 1) and stats == ServeStats(3, 10, 1)


def test_stop_wakes_its_pipe_runs_callbacks_and_stays_set():
    stop = multiserve.Stop()
    called = []
    stop.add_callback(lambda: called.append(stop.reason))
    setter = threading.Thread(target=stop.set, args=("from a thread",))
    setter.start()
    assert stop.wait(5)
    setter.join(5)
    import select
    assert select.select([stop.fileno()], [], [], 5)[0] == [stop.fileno()]
    stop.drain()
    assert select.select([stop.fileno()], [], [], 0)[0] == [stop.fileno()]  # still readable once set
    assert called == ["from a thread"]
    stop.set("again")  # once only
    assert stop.reason == "from a thread" and called == ["from a thread"]
    stop.close()


def test_an_out_of_descriptors_flood_logs_the_first_episode_then_a_summary_per_interval(caplog):
    now = [0.0]
    errors = AcceptErrorLog(clock=lambda: now[0])
    emfile = OSError(24, "Too many open files")
    with caplog.at_level(logging.INFO, logger="multiserve"):
        for episode in range(15):  # 15 episodes, 2 s apart, 3 failed accepts each
            for _ in range(3):
                assert errors.failed(emfile)
            errors.succeeded()
            now[0] += 2.0
    lines = [r.getMessage() for r in caplog.records]
    assert sum("accept failed" in line for line in lines) == 1
    assert sum("accept works again" in line for line in lines) == 1
    summaries = [line for line in lines if "more times" in line]
    # 28 s after the first episode ended: at most one summary per SUMMARY_SECONDS
    assert 1 <= len(summaries) <= 28 / SUMMARY_SECONDS + 1
    assert not errors.failed(OSError(1, "not a resource error"))


def test_the_service_base_class_declares_every_hook_and_still_detects_overrides():
    for name in ("handle", "handle_async", "cpu_bound_for", "setup", "finish", "open", "close"):
        assert name in dir(multiserve.Service) and getattr(multiserve.Service, name).__doc__

    class Plain(multiserve.Service):
        def handle(self, request, conn):
            return request

    class Async(multiserve.Service):
        async def handle_async(self, request, conn):
            return request

    class Split(Plain):
        def cpu_bound_for(self, request):
            return True

    assert not has_async_handle(Plain()) and has_async_handle(Async())
    assert not CallPlan(Plain()).split and CallPlan(Split()).split and CallPlan(Split()).wants_cpu_pool
    assert CallPlan(Async()).coroutine and not CallPlan(Async()).sync


def test_embedded_serve_prints_the_stopped_summary():
    """issue 16 item 9: ``multiserve.serve(...)`` in a user's script logs its summary line too."""
    script = "import multiserve; multiserve.serve('upper', engine='thread', port=0)"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert "multiserve listening on" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "stopped: connections=0 requests=0 errors=0" in err and "Traceback" not in err
