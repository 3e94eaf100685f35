"""The cost of --metrics-port's counting per request, on one thread: ``Session.answer`` of the
plain session against the metered one (``upper``, the line protocol), best of 7 x 3 x 100,000.
Seconds, so the machine's load moves it: run it beside the instruction counts of
``WHICH="engine engine-metrics" bash benchmarks/hot_path.sh``.

    .venv/bin/python benchmarks/session_answer.py
"""
import timeit

from multiserve.config import ServerConfig
from multiserve.meter import LocalMeter
from multiserve.observed import Observer
from multiserve.protocol import protocol_factory
from multiserve.services import Upper
from multiserve.session import SessionFactory

config = ServerConfig(port=0)
plain = SessionFactory(Upper(), protocol_factory("line", config)).make_session(("127.0.0.1", 1))
metered = SessionFactory(Upper(), protocol_factory("line", config), Observer(LocalMeter())).make_session(("127.0.0.1", 1))
request = b"hello world 042"
best = {"plain": [], "metered": []}
for _ in range(7):  # interleaved
    for name, session in (("plain", plain), ("metered", metered)):
        answer = session.answer
        best[name].append(min(timeit.repeat(lambda: answer(request), number=100_000, repeat=3)) * 1e4)
p, m = min(best["plain"]), min(best["metered"])
print(f"plain {p:.0f} ns, metered {m:.0f} ns per answer: +{m - p:.0f} ns "
      f"({type(metered).__name__}; time.perf_counter_ns alone: "
      f"{min(timeit.repeat('n()', 'import time; n = time.perf_counter_ns', number=100_000, repeat=5)) * 1e4:.0f} ns)")
