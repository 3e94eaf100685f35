"""The ticket office through real servers: every store x every engine, shared stores, kill -9,
the unsafe race, bad commands, and the CLI."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading

import pytest

from multiserve.engines import ENGINES
from multiserve.services.tickets import TicketService
from multiserve.services.tickets.rush import rush
from multiserve.stores import open_store
from multiserve.stores.testing import fresh_store_url, params
from multiserve.testing import running_server

pytestmark = pytest.mark.timeout(90)

# Every registered engine whose module exists (``hybrid`` joins once it is written).
ENGINE_NAMES = [name for name, target in ENGINES.items()
                if importlib.util.find_spec(target.partition(":")[0]) is not None]
TICKETS, BUYERS = 100, 300


@pytest.fixture(params=params())
def url(request, tmp_path):
    with fresh_store_url(request.param, tmp_path) as url:
        yield url


def serve_tickets(url, engine, *extra):
    return running_server("--engine", engine, "--service", "tickets", "--store", url, "--port", "0",
                          "--workers", "2", *extra)


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "multiserve", "tickets", *args],
                          capture_output=True, text=True, timeout=timeout)


def acknowledged(result):
    return {(op.ticket, op.buyer) for op in result.ops if op.type == "ok"}


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_rush_sells_exactly_the_tickets_on_every_engine(url, engine):
    with open_store(url) as store:
        store.init(TICKETS)
    with serve_tickets(url, engine) as server:
        result = rush(url, BUYERS, via=[(server.host, server.port)], connections=32)
    assert result.problems == []
    assert (result.count("ok"), result.count("info"), result.after.left) == (TICKETS, 0, 0)
    assert sorted(t for t, _ in acknowledged(result)) == list(range(1, TICKETS + 1))
    assert acknowledged(result) == set(result.after.sales)  # the record of ok sales IS the ledger
    assert all(op.detail == "SOLDOUT" for op in result.ops if op.type == "fail")


PAIRS = [pair for pair in [("threadpool", "asyncio"), ("hybrid", "gevent")] if set(pair) <= set(ENGINE_NAMES)]


@pytest.mark.parametrize("pair", PAIRS, ids="+".join)
def test_two_servers_on_different_engines_share_one_store(url, pair):
    with open_store(url) as store:
        store.init(TICKETS)
    with serve_tickets(url, pair[0]) as a, serve_tickets(url, pair[1]) as b:
        result = rush(url, BUYERS, via=[(a.host, a.port), (b.host, b.port)], connections=32)
    assert result.problems == []
    assert (result.count("ok"), result.after.sold, result.after.left) == (TICKETS, TICKETS, 0)
    assert acknowledged(result) == set(result.after.sales)


# The kill -9 test: each store under a different engine, so the crash covers several shapes.
KILL_ENGINE = {"sqlite": "process", "json": "threadpool", "redis": "gevent",
               "postgres": "hybrid" if "hybrid" in ENGINE_NAMES else "asyncio"}


@pytest.mark.parametrize("kind", params())
def test_kill_9_mid_rush_loses_no_acknowledged_sale(kind, tmp_path):
    engine = KILL_ENGINE[kind]
    with fresh_store_url(kind, tmp_path) as url:
        with open_store(url) as store:
            store.init(TICKETS)
        with serve_tickets(url, engine) as server:
            twenty_sold, killed = threading.Event(), threading.Event()
            oks = []

            def observe(op):
                if op.type == "ok":
                    oks.append(op)
                    if len(oks) >= 20:
                        twenty_sold.set()
                    if len(oks) >= 60:  # hold the buyers there, so the kill surely lands mid-rush
                        killed.wait(60)

            outcome = {}
            buyers = threading.Thread(target=lambda: outcome.setdefault(
                "result", rush(url, BUYERS, via=[(server.host, server.port)], connections=16, observe=observe)))
            buyers.start()
            assert twenty_sold.wait(60), "the rush never got going"
            server.kill()  # SIGKILL to the server's process group, mid-rush
            killed.set()
            buyers.join(60)
        result = outcome["result"]
        assert 20 <= result.count("ok") < TICKETS, "the kill did not land mid-rush"
        assert result.problems == []  # every ok is in the ledger; #ok <= sold <= #ok + #info
        with serve_tickets(url, engine) as server:  # restart on the same store
            check = cli("check", "--store", url)
            assert check.returncode == 0, check.stdout + check.stderr
            rest = rush(url, BUYERS, via=[(server.host, server.port)], connections=16)
        assert rest.problems == []
        ledger = set(rest.after.sales)
        assert acknowledged(result) | acknowledged(rest) <= ledger
        assert (rest.after.sold, rest.after.left) == (TICKETS, 0)


def test_unsafe_rush_oversells(tmp_path):
    url = f"json:{tmp_path}/data.json"
    assert cli("init", "--store", url, "--count", str(TICKETS)).returncode == 0
    report = tmp_path / "unsafe.json"
    done = cli("rush", "--store", url, "--buyers", str(BUYERS), "--unsafe", "--json", str(report))
    summary = json.loads(report.read_text())
    assert done.returncode == 1, done.stdout + done.stderr  # the invariants failed, as they must
    assert summary["oversold"] > 0 and summary["ok"] > summary["sold"]
    assert "oversold:" in done.stdout and "FAIL" in done.stdout
    assert len(summary["ops"]) == BUYERS


def test_cli_init_rush_check_through_two_processes(tmp_path):
    url = f"sqlite:{tmp_path}/t.db"
    assert cli("init", "--store", url, "--count", str(TICKETS)).returncode == 0
    again = cli("init", "--store", url, "--count", str(TICKETS))
    assert again.returncode == 0, again.stderr  # no sales yet: nothing to wipe, no --force needed
    with serve_tickets(url, "thread") as server:
        report = tmp_path / "rush.json"
        done = cli("rush", "--store", url, "--buyers", str(BUYERS), "--processes", "2",
                   "--via", f"{server.host}:{server.port}", "--json", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(report.read_text())
    assert (summary["ok"], summary["soldout"], summary["sold"], summary["problems"]) == (TICKETS, 200, TICKETS, [])
    assert cli("check", "--store", url).returncode == 0
    wipe = cli("init", "--store", url, "--count", "5")
    assert wipe.returncode == 2 and "already has 100 sales: add --force" in wipe.stderr
    assert "Traceback" not in wipe.stderr


def test_check_fails_and_says_why(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"ticket_num": 1, "initial": 3, "sales": [[1, "a"], [1, "b"]]}))
    done = cli("check", "--store", f"json:{path}")
    assert done.returncode == 1
    assert "FAIL 1 ticket numbers sold more than once" in done.stdout


def test_uninitialised_store_fails_serve_in_one_line(tmp_path):
    url = f"sqlite:{tmp_path}/none.db"
    done = subprocess.run([sys.executable, "-m", "multiserve", "serve", "--service", "tickets", "--store", url,
                           "--port", "0"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not initialised" in lines[0]


BAD = [
    (b"HELLO\n", b"ERR unknown command 'HELLO'"),
    (b"\n", b"ERR unknown command '(empty line)'"),
    (b"query\n", b"ERR unknown command 'query'"),
    (b"QUERY now\n", b"ERR QUERY takes no argument"),
    (b"BUY\n", b"ERR BUY needs a buyer"),
    (b"BUY \n", b"ERR BUY needs a buyer"),
    (b"BUY two words\n", b"ERR BUY needs a buyer"),
    (b"BUY " + b"x" * 65 + b"\n", b"ERR BUY needs a buyer"),
    (b"BUY tab\there\n", b"ERR BUY needs a buyer"),
    (b"BUY caf\xc3\xa9\n", b"ERR BUY needs a buyer"),
]


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_bad_commands_get_err_and_sell_nothing(engine, tmp_path):
    url = f"sqlite:{tmp_path}/t.db"
    with open_store(url) as store:
        store.init(2)
    with serve_tickets(url, engine) as server, server.connect() as client:
        for line, expected in BAD:
            assert client.request(line).startswith(expected), line
        assert client.request(b"QUERY\n") == b"LEFT 2\n"
        assert client.request(b"BUY " + b"x" * 64 + b"\n") == b"SOLD 1 " + b"x" * 64 + b"\n"
        assert client.request(b"BUY bob\r\n") == b"SOLD 2 bob\n"
        assert client.request(b"BUY carol\n") == b"SOLDOUT\n"
        assert client.request(b"QUERY\n") == b"LEFT 0\n"


def test_store_failure_mid_sale_is_reported_as_unknown_outcome(tmp_path):
    """If the store fails during BUY the sale may have happened: the reply must not claim it did not."""
    url = f"sqlite:{tmp_path}/t.db"
    with open_store(url) as store:
        store.init(2)
    service = TicketService(url)
    assert service.handle(b"QUERY\n", None) == b"LEFT 2\n"
    (tmp_path / "t.db").unlink()  # the store vanishes between two requests
    service.close()
    assert service.handle(b"QUERY\n", None) == b"ERR store unavailable\n"
    assert service.handle(b"BUY a\n", None).startswith(b"ERR unknown outcome")
