"""``sqlite:PATH``: the embedded default store.

Durability and atomicity, each for a reason:

- ``journal_mode=WAL`` with ``synchronous=FULL``: in WAL mode, NORMAL skips the fsync at commit
  (a power cut may lose the last commits); FULL fsyncs the WAL at every commit, so a ``SOLD``
  reply always follows a flushed commit.
- ``BEGIN IMMEDIATE``: Python's sqlite3 opens *deferred* transactions, which take the write lock
  only at the first write; two buyers could both read ``left = 1`` first. IMMEDIATE takes the
  write lock up front, so the read-check-write is serialised across threads and processes.
- a busy timeout of 30 s (the server's default ``--request-timeout``): writers queue on the lock
  rather than fail with "database is locked".
"""
from __future__ import annotations

import os
import sqlite3
from urllib.parse import quote

from .base import ConnectionPool, Snapshot, Store, StoreError, check_directory, file_store_path

# What sqlite says of a file that is not a database, or a damaged one (SQLITE_NOTADB, SQLITE_CORRUPT).
DAMAGED = ("file is not a database", "database disk image is malformed")

BUSY_TIMEOUT_SECONDS = 30.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS inventory (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    initial INTEGER NOT NULL,
    left INTEGER NOT NULL CHECK (left >= 0)
);
CREATE TABLE IF NOT EXISTS sales (
    ticket_no INTEGER PRIMARY KEY,
    buyer TEXT NOT NULL
);
"""


class SqliteStore(Store):
    def __init__(self, url: str):
        super().__init__(url)
        self.path, fsync = file_store_path(url)
        if not self.path:
            raise self.unreachable(ValueError("sqlite: needs a path, e.g. sqlite:tickets.db"))
        self.synchronous = "FULL" if fsync else "OFF"  # OFF only to measure what durability costs
        self.pool = ConnectionPool(self._connect)

    def _error(self, exc: sqlite3.Error) -> StoreError:
        if any(text in str(exc) for text in DAMAGED):
            return self.damaged(self.path, str(exc))
        return self.unreachable(exc)

    def _connect(self) -> sqlite3.Connection:
        if not os.path.exists(self.path):  # only init creates the file
            check_directory(self.name, self.path)  # a missing directory, said as such
            raise self.not_initialised()
        try:
            # isolation_level=None: we issue BEGIN ourselves (IMMEDIATE, not the default deferred)
            conn = sqlite3.connect(f"file:{quote(self.path)}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_SECONDS,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return conn

    def _run(self, work, write: bool = True):
        """Run ``work(conn)`` in one transaction (IMMEDIATE to write); commit before returning."""
        try:
            with self.pool.connection() as conn:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = work(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise self.not_initialised() from None
            raise self._error(exc) from None
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def init(self, count: int, force: bool = False, *, create_dir: bool = False) -> None:
        check_directory(self.name, self.path, create=create_dir)
        try:
            sqlite3.connect(self.path).close()  # create the file
        except sqlite3.Error as exc:
            raise self._error(exc) from None

        def work(conn):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            sold = conn.execute("SELECT count(*) FROM sales").fetchone()[0]
            if sold and not force:
                raise self.refuse_wipe(sold)
            conn.execute("DELETE FROM sales")
            conn.execute("INSERT OR REPLACE INTO inventory (id, initial, left) VALUES (1, ?, ?)", (count, count))

        self._run(work)

    def take(self, buyer: str) -> int | None:
        def work(conn):
            row = conn.execute("SELECT initial, left FROM inventory WHERE id = 1").fetchone()
            if row is None:
                raise self.not_initialised()
            initial, left = row
            if left <= 0:
                return None
            conn.execute("UPDATE inventory SET left = left - 1 WHERE id = 1")
            ticket = initial - left + 1
            conn.execute("INSERT INTO sales (ticket_no, buyer) VALUES (?, ?)", (ticket, buyer))
            return ticket

        return self._run(work)

    def left(self) -> int:
        return self.snapshot(ledger=False).left

    def snapshot(self, ledger: bool = True) -> Snapshot:
        def work(conn):
            row = conn.execute("SELECT initial, left FROM inventory WHERE id = 1").fetchone()
            if row is None:
                raise self.not_initialised()
            sales = conn.execute("SELECT ticket_no, buyer FROM sales ORDER BY ticket_no").fetchall() if ledger else ()
            return Snapshot(row[0], row[1], tuple(sales))

        return self._run(work, write=False)

    def close(self) -> None:
        self.pool.close()
