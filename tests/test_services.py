"""Services are pure logic: called directly, no engine, no socket."""
import time

import pytest

from multiserve.services import Cpu, Echo, Sleep, Upper, load_service
from multiserve.session import CallPlan, Session
from multiserve.testing.sample_services import AsyncReverseService, CountingService


@pytest.mark.parametrize("line", [b"hello\n", "h\u00e9llo w\u00f6rld\n".encode(), b"\xff\xfe\x80\n", b"no newline"])
def test_upper_is_bytes_upper_and_echo_is_identity(line):
    assert Upper().handle(line, None) == line.upper()
    assert Echo().handle(line, None) == line


def test_sleep_and_cpu_reply_like_upper_and_take_their_time():
    started = time.perf_counter()
    assert Sleep(20).handle(b"abc\n", None) == b"ABC\n"
    assert time.perf_counter() - started >= 0.019
    started = time.thread_time()
    assert Cpu(20).handle(b"abc\n", None) == b"ABC\n"
    assert time.thread_time() - started >= 0.019


def test_registry_parses_specs_and_rejects_bad_ones():
    assert isinstance(load_service("upper"), Upper)
    assert load_service("sleep:15").ms == 15
    assert load_service("cpu:2.5").ms == 2.5
    assert isinstance(load_service("multiserve.testing.sample_services:CountingService"), CountingService)
    for bad, message in [("nope", "unknown service"), ("sleep", "needs a duration"), ("sleep:x", "milliseconds"),
                         ("no_such_mod:X", "cannot import"), ("multiserve.services:Nope", "has no attribute"),
                         ("multiserve.services:BUILTIN_SERVICES", "not a service")]:
        with pytest.raises(ValueError, match=message):
            load_service(bad)


def test_call_plans_follow_the_flags():
    assert CallPlan(Upper()).inline and not CallPlan(Upper()).blocking
    assert CallPlan(Sleep(1)).blocking and CallPlan(Sleep(1)).coroutine
    assert CallPlan(Cpu(1)).cpu and not CallPlan(Cpu(1)).inline
    plan = CallPlan(AsyncReverseService())
    assert plan.coroutine and not plan.sync


def test_session_keeps_per_connection_state_and_runs_async_services_synchronously():
    service = CountingService()
    a, b = Session(service, 100), Session(service, 100)
    assert [a.handle(b"x\n"), a.handle(b"y\n"), b.handle(b"z\n")] == [b"1 X\n", b"2 Y\n", b"1 Z\n"]
    assert Session(AsyncReverseService(), 100).handle(b"abc\n") == b"cba\n"


def test_a_failing_service_costs_one_error_reply_not_the_connection():
    class Broken(Upper):
        def handle(self, request, conn):
            raise RuntimeError("boom")

    session = Session(Broken(), 100)
    assert session.handle(b"x\n") == b"ERR service error\n"
    assert session.requests == 1
