"""The ticket office through real servers: every store x every engine, shared stores, kill -9,
the unsafe race, bad commands, and the CLI."""
from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading

import pytest

from multiserve.engines import ENGINES, unavailable
from multiserve.services import load_service
from multiserve.services.tickets import TicketService
from multiserve.services.tickets.rush import Op, RushResult, rush
from multiserve.stores import Snapshot
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
    assert {b for _, b in result.after.sales} <= {f"用户{i}#号" for i in range(BUYERS)}  # the seed's names, as sent


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
# Where gevent cannot run (a free-threaded build, issue 13) redis's crash runs under asyncio.
KILL_ENGINE = {"sqlite": "process", "json": "threadpool", "redis": "asyncio" if unavailable("gevent") else "gevent",
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
    (b"BUY caf\xe9\n", b"ERR BUY needs a buyer"),  # Latin-1, not UTF-8
    (b"BUY no\xc2\xa0break\n", b"ERR BUY needs a buyer"),  # U+00A0 is whitespace
    (b"BUY " + "号".encode() * 65 + b"\n", b"ERR BUY needs a buyer"),  # 65 characters
]


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_bad_commands_get_err_and_sell_nothing(engine, tmp_path):
    url = f"sqlite:{tmp_path}/t.db"
    with open_store(url) as store:
        store.init(4)
    sixty_four = "号".encode() * 64  # 64 characters, 192 bytes
    with serve_tickets(url, engine) as server, server.connect() as client:
        for line, expected in BAD:
            assert client.request(line).startswith(expected), line
        assert client.request(b"QUERY\n") == b"LEFT 4\n"
        assert client.request(b"BUY " + sixty_four + b"\n") == b"SOLD 1 " + sixty_four + b"\n"
        assert client.request(b"BUY bob\r\n") == b"SOLD 2 bob\n"
        assert client.request("BUY 用户1#号\n".encode()) == "SOLD 3 用户1#号\n".encode()
        assert client.request("BUY José\n".encode()) == "SOLD 4 José\n".encode()
        assert client.request(b"BUY carol\n") == b"SOLDOUT\n"
        assert client.request(b"QUERY\n") == b"LEFT 0\n"
    with open_store(url) as store:
        assert [b for _, b in store.snapshot().sales] == ["号" * 64, "bob", "用户1#号", "José"]


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


@pytest.fixture
def dead_port():
    """A port with nobody listening: bound (so no one else takes it meanwhile) but not listening,
    so a connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_rush_at_no_server_says_so_in_one_line_and_fails(tmp_path, dead_port):
    url = f"sqlite:{tmp_path}/t.db"
    assert cli("init", "--store", url, "--count", "20").returncode == 0
    done = cli("rush", "--store", url, "--buyers", "20", "--via", f"127.0.0.1:{dead_port}")
    assert done.returncode == 1
    assert done.stderr == "multiserve tickets rush: no server answered: 20 refused\n"
    assert done.stdout == ""  # no summary of zeros, no "OK"


def test_rush_breaks_errors_down_by_kind(tmp_path, dead_port):
    """Half the connections go to a live server, half to nobody: the errors are counted as refused."""
    url = f"sqlite:{tmp_path}/t.db"
    assert cli("init", "--store", url, "--count", "100").returncode == 0
    report = tmp_path / "rush.json"
    with serve_tickets(url, "threadpool") as server:
        done = cli("rush", "--store", url, "--buyers", "40", "--connections", "2", "--json", str(report),
                   "--via", f"{server.host}:{server.port}", "--via", f"127.0.0.1:{dead_port}")
    assert done.returncode == 0, done.stdout + done.stderr  # what was sold is sound
    summary = json.loads(report.read_text())
    refused = summary["errors_by_kind"]["refused"]
    assert summary["errors_by_kind"] == {"refused": refused} and refused > 0
    assert summary["errors"] == refused and summary["ok"] == 40 - refused == summary["sold"]
    assert f"errors {refused} ({refused} refused)" in done.stdout
    assert {op[4] for op in summary["ops"]} == {"", "refused"}


def test_errors_by_kind_counts_each_kind():
    ops = [Op("a", "ok", 1), Op("b", "fail", detail="SOLDOUT"), Op("c", "fail", error="refused", answered=False),
           Op("d", "info", error="reset", answered=False), Op("e", "fail", detail="ERR x", error="ERR"),
           Op("f", "info", error="unknown outcome"), Op("g", "fail", error="refused", answered=False)]
    result = RushResult(ops, 1.0, Snapshot(5, 5, ()), Snapshot(5, 4, ((1, "a"),)), [])
    summary = result.summary()
    assert summary["errors_by_kind"] == {"refused": 2, "reset": 1, "ERR": 1, "unknown outcome": 1}
    assert (summary["errors"], summary["answered"], summary["soldout"]) == (5, 4, 1)


def test_store_with_another_service_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="--store is for --service tickets only, not 'upper'"):
        load_service("upper", {"store": "sqlite:t.db"})
    assert load_service("upper", {"store": None}).handle(b"a\n", None) == b"A\n"
    done = subprocess.run([sys.executable, "-m", "multiserve", "serve", "--service", "echo", "--store",
                           f"sqlite:{tmp_path}/t.db", "--port", "0"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--store is for --service tickets only" in lines[0], done.stderr


def test_cli_store_path_errors_are_one_line(tmp_path):
    (tmp_path / "passwd").write_text("x")
    (tmp_path / "bad.db").write_text("garbage")
    cases = [(["init", "--store", f"sqlite:{tmp_path}/no/dir/t.db", "--count", "3"],
              f"directory {tmp_path}/no/dir does not exist"),
             (["init", "--store", f"sqlite:{tmp_path}/passwd/x.db", "--count", "3"], "passwd is not a directory"),
             (["init", "--store", f"sqlite:{tmp_path}/bad.db", "--count", "3", "--force"], "to start over")]
    for args, message in cases:
        done = cli(*args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "no").exists()
    made = cli("init", "--store", f"sqlite:{tmp_path}/no/dir/t.db", "--count", "3", "--create-dir")
    assert made.returncode == 0, made.stderr
    assert cli("check", "--store", f"sqlite:{tmp_path}/no/dir/t.db").returncode == 0
