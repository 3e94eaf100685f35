"""The store contract, on every store: atomic take, init/--force, clear errors, durability settings."""
from __future__ import annotations

import os
import sqlite3

import pytest

from multiserve.services.tickets.rush import rush
from multiserve.stores import StoreError, open_store, parse_buyer, redact, valid_buyer, violations
from multiserve.stores.base import Snapshot
from multiserve.stores.testing import fresh_store_url, params

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=params())
def url(request, tmp_path):
    with fresh_store_url(request.param, tmp_path) as url:
        yield url


def test_uninitialised_store_says_so(url):
    with open_store(url) as store:
        with pytest.raises(StoreError, match="is not initialised: run `multiserve tickets init"):
            store.left()
        with pytest.raises(StoreError, match="is not initialised"):
            store.take("alice")


def test_take_sells_numbered_tickets_then_sells_out(url):
    with open_store(url) as store:
        store.init(3)
        assert store.left() == 3
        assert [store.take(b) for b in ("a", "b", "c", "d")] == [1, 2, 3, None]
        snap = store.snapshot()
        assert (snap.initial, snap.left, snap.sales) == (3, 0, ((1, "a"), (2, "b"), (3, "c")))
        assert violations(snap) == []


# The seed tutorial's own buyers, a Latin name with an accent, and 64 characters of 3 bytes each.
SEED_NAMES = ("用户0#号", "用户1#号", "José", "号" * 64)


def test_seed_buyer_names_are_sold_and_stored_as_utf8(url):
    with open_store(url) as store:
        store.init(len(SEED_NAMES))
        assert [store.take(name) for name in SEED_NAMES] == [1, 2, 3, 4]
        snap = store.snapshot()
    assert snap.sales == tuple(enumerate(SEED_NAMES, 1))
    assert violations(snap) == []
    with open_store(url) as again:  # a fresh connection reads the same characters back
        assert again.snapshot().sales == snap.sales


def test_a_buyer_is_1_to_64_printable_characters_without_whitespace():
    for name in SEED_NAMES + ("a", "x" * 64, "Ærøskøbing", "عمر", "🎫"):
        assert valid_buyer(name) and parse_buyer(name.encode("utf-8")) == name, name
    for name in ("", "x" * 65, "号" * 65, "a b", "a\tb", "a\u00a0b", "a\u2028b", "a\u3000b", "nul\x00", "bell\x07"):
        assert not valid_buyer(name) and parse_buyer(name.encode("utf-8")) is None, repr(name)
    assert parse_buyer(b"caf\xe9") is None  # Latin-1, not UTF-8
    assert parse_buyer(b"\xff" * 300) is None


def test_init_refuses_to_wipe_sales_without_force(url):
    with open_store(url) as store:
        store.init(5)
        store.init(5)  # no sales yet: nothing to lose
        store.take("alice")
        with pytest.raises(StoreError, match="already has 1 sales: add --force"):
            store.init(5)
        assert store.snapshot().sales == ((1, "alice"),)
        store.init(7, force=True)
        assert store.snapshot() == Snapshot(7, 7, ())


def test_concurrent_buyers_in_two_processes_never_oversell(url):
    with open_store(url) as store:
        store.init(100)
    result = rush(url, 300, processes=2, connections=16)
    assert result.problems == []
    assert (result.count("ok"), result.count("info"), result.after.left) == (100, 0, 0)
    assert sorted(op.ticket for op in result.ops if op.type == "ok") == list(range(1, 101))
    assert {(op.ticket, op.buyer) for op in result.ops if op.type == "ok"} == set(result.after.sales)


def test_threads_of_one_process_never_oversell(url):
    """flock belongs to the open file, sqlite3 connections to a thread: both must hold for threads."""
    with open_store(url) as store:
        store.init(50)
    result = rush(url, 200, processes=1, connections=32)
    assert result.problems == []
    assert (result.count("ok"), result.after.left, result.after.sold) == (50, 0, 50)


def test_violations_catch_each_broken_invariant():
    sound = Snapshot(3, 1, ((1, "a"), (2, "b")))
    assert violations(sound) == []
    assert any("sold 2 + left 2 != initial 3" in p for p in violations(Snapshot(3, 2, sound.sales)))
    assert any("more than once" in p for p in violations(Snapshot(3, 1, ((1, "a"), (1, "b")))))
    assert any("outside 1..3" in p for p in violations(Snapshot(3, 1, ((1, "a"), (9, "b")))))
    assert any("without a valid buyer" in p for p in violations(Snapshot(3, 1, ((1, "a"), (2, "")))))


def test_redact_hides_only_the_password():
    assert redact("postgresql://u:secret@db.example:5432/x") == "postgresql://u:***@db.example:5432/x"
    assert redact("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("sqlite:tickets.db") == "sqlite:tickets.db"


def test_unknown_scheme_is_one_clear_line():
    with pytest.raises(StoreError, match="unknown store 'mongo://x'"):
        open_store("mongo://x")


@pytest.mark.parametrize("url", ["postgresql://u:secret@127.0.0.1:1/x", "redis://:secret@127.0.0.1:1/0"])
def test_unreachable_store_names_url_without_password(url):
    with open_store(url) as store:
        with pytest.raises(StoreError) as info:
            store.left()
    message = str(info.value)
    assert "secret" not in message and "\n" not in message
    assert message.startswith(f"cannot use store {redact(url)}: ")


def test_sqlite_commits_durably_and_locks_up_front(tmp_path):
    url = f"sqlite:{tmp_path}/t.db"
    with open_store(url) as store:
        store.init(1)
        with store.pool.connection() as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            conn.execute("BEGIN IMMEDIATE")  # we hold the write lock: a second writer must wait
            other = sqlite3.connect(f"{tmp_path}/t.db", timeout=0)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
            conn.execute("ROLLBACK")


def test_json_store_locks_a_separate_file_and_leaves_no_temp_files(tmp_path):
    url = f"json:{tmp_path}/data.json"
    with open_store(url) as store:
        store.init(10)
        for i in range(10):
            store.take(f"b{i}")
    assert sorted(os.listdir(tmp_path)) == ["data.json", "data.json.lock"]


@pytest.mark.parametrize("scheme", ["sqlite", "json"])
def test_fsync_off_is_an_explicit_measuring_option(scheme, tmp_path):
    with open_store(f"{scheme}:{tmp_path}/t?fsync=off") as store:
        store.init(2)
        assert store.take("a") == 1
    assert os.path.exists(tmp_path / "t")  # the option is not part of the path
    with pytest.raises(StoreError, match=r"the only option is \?fsync=off"):
        open_store(f"{scheme}:{tmp_path}/t?durable=no")


@pytest.mark.parametrize("scheme", ["sqlite", "json"])
def test_a_missing_directory_is_named_and_created_only_when_asked(scheme, tmp_path):
    missing = tmp_path / "no" / "such"
    url = f"{scheme}:{missing}/t.db"
    for attempt in (lambda s: s.init(3), lambda s: s.left(), lambda s: s.snapshot()):
        with open_store(url) as store:
            with pytest.raises(StoreError, match=f"directory {missing} does not exist .*--create-dir"):
                attempt(store)
    assert not (tmp_path / "no").exists()  # nothing was created on the way
    with open_store(url) as store:
        store.init(3, create_dir=True)
        assert store.take("José") == 1
    assert (missing / "t.db").is_file()


@pytest.mark.parametrize("scheme", ["sqlite", "json"])
def test_a_file_where_a_directory_should_be_says_not_a_directory(scheme, tmp_path):
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    with open_store(f"{scheme}:{tmp_path}/passwd/x.db") as store:
        for create in (False, True):
            with pytest.raises(StoreError, match=f"{tmp_path}/passwd is not a directory$"):
                store.init(3, create_dir=create)
    with open_store(f"{scheme}:{tmp_path}") as store:
        with pytest.raises(StoreError, match="is a directory, not a store file"):
            store.init(3)
    assert (tmp_path / "passwd").read_text() == "root:x:0:0\n"


@pytest.mark.parametrize("scheme, content", [("sqlite", b"not a database, just text\n" * 100),
                                             ("json", b'{"ticket_num": 3, "sales": [[1, '),
                                             ("json", b'{"hello": "someone else\'s file"}')])
def test_a_damaged_store_says_what_is_wrong_and_how_to_start_over(scheme, content, tmp_path):
    path = tmp_path / "t.db"
    path.write_bytes(content)
    with open_store(f"{scheme}:{path}") as store:
        for attempt in (lambda: store.init(3, force=True), store.snapshot, lambda: store.take("a")):
            with pytest.raises(StoreError) as info:
                attempt()
            message = str(info.value)
            assert "is damaged or not a ticket store" in message and "\n" not in message
            assert f"move {path} away" in message and "tickets init" in message and "to start over" in message
    assert path.read_bytes() == content  # never overwritten, even with force: it may be someone's file
    path.unlink()
    with open_store(f"{scheme}:{path}") as store:  # what the message says works
        store.init(3)
        assert store.left() == 3
