"""Services are pure logic: called directly, no engine, no socket."""
import time

import pytest

from multiserve.services import Cpu, Echo, Sleep, Upper, load_service
import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from multiserve.protocol import LineProtocol
from multiserve.services import Service
from multiserve.session import CallPlan, Pools, SessionFactory
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


def line_session(service, max_line=100):
    session = SessionFactory(service, lambda: LineProtocol(max_line)).make_session(("127.0.0.1", 1))
    assert session.start() is None
    return session


def test_session_keeps_per_connection_state_and_runs_async_services_synchronously():
    service = CountingService()
    a, b = line_session(service), line_session(service)
    assert [a.answer(b"x\n"), a.answer(b"y\n"), b.answer(b"z\n")] == [b"1 X\n", b"2 Y\n", b"1 Z\n"]
    assert line_session(AsyncReverseService()).answer(b"abc\n") == b"cba\n"


def test_the_session_frames_through_its_protocol_and_joins_pipelined_replies():
    session = line_session(Upper(), max_line=8)
    assert session.receive(b"ab\ncd\nef") == [b"ab\n", b"cd\n"]
    assert session.pending == 2 and session.error is None
    assert session.answer_all([b"ab\n", b"cd\n"]) == b"AB\nCD\n"
    assert session.receive(b"ghijklmnop") == []
    assert session.error.reply == b"ERR line too long (limit 8 bytes)\n"


class Broken(Upper):
    def handle(self, request, conn):
        raise RuntimeError("boom")


class ReturnsStr(Upper):
    def handle(self, request, conn):
        return request.decode().upper()


class BrokenCpu(Cpu):
    def handle(self, request, conn):
        raise ValueError("cpu boom")


class BrokenAsync(Service):
    async def handle_async(self, request, conn):
        raise KeyError("async boom")


class BrokenSetup(Upper):
    def setup(self, conn):
        raise OSError("no database")

    def finish(self, conn):  # must not run: setup never succeeded
        raise AssertionError("finish after a failed setup")


def answer_on_a_loop(session, request, cpu_pool=None):
    async def main():
        with ThreadPoolExecutor(2) as threads:
            pools = Pools(asyncio.get_running_loop().run_in_executor, threads, cpu_pool)
            return await session.answer_async(request, pools)
    return asyncio.run(main())


@pytest.mark.parametrize("service", [Broken(), ReturnsStr(), BrokenCpu(0), BrokenAsync()],
                         ids=["raises", "returns-str", "cpu-bound-raises", "async-raises"])
def test_every_call_path_gives_a_failing_service_the_same_error_reply(service):
    """Inline on the calling thread, awaited or in a thread pool on a loop, in a process pool:
    one ERR line, counted as a request, and the session goes on."""
    session = line_session(service)
    assert session.answer(b"x\n") == b"ERR service error\n"
    assert answer_on_a_loop(session, b"x\n") == b"ERR service error\n"
    if CallPlan(service).cpu:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            assert answer_on_a_loop(session, b"x\n", cpu_pool=pool) == b"ERR service error\n"
    assert session.requests >= 2 and session.errored == 0


def test_a_service_error_is_logged_with_its_traceback_once_and_a_str_reply_names_its_type(caplog):
    session = line_session(Broken())
    with caplog.at_level(logging.ERROR, logger="multiserve"):
        session.answer(b"x\n")
        session.answer(b"y\n")
        line_session(ReturnsStr()).answer(b"z\n")
    records = [r for r in caplog.records if r.name.startswith("multiserve")]
    with_traceback = [r for r in records if r.exc_info]
    assert len(with_traceback) <= 1  # once per distinct error (and once per process: maybe earlier)
    assert any("RuntimeError: boom" in r.getMessage() for r in records)
    assert any("returned str" in r.getMessage() for r in records)


def test_a_failing_setup_gets_one_error_reply_and_no_finish():
    session = SessionFactory(BrokenSetup(), lambda: LineProtocol(100)).make_session(None)
    assert session.start() == b"ERR service error\n"
    assert session.errored == 1
    session.finish()  # BrokenSetup.finish would raise: it is not called
