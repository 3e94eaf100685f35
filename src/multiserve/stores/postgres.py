"""``postgresql://...``: the store several server machines can share (psycopg 3).

A sale is one statement in one transaction (autocommit): a conditional update
``... SET left = left - 1 WHERE left > 0 RETURNING ...`` whose row lock serialises concurrent
buyers (a waiter re-checks ``left > 0`` on the updated row, PostgreSQL's READ COMMITTED rule for
UPDATE), feeding the INSERT into the ledger. With ``synchronous_commit`` on (the default) the
commit is flushed to the WAL before the reply comes back, so a ``SOLD`` is durable.

Tables live in the connection's ``search_path`` (``?options=-csearch_path%3DNAME`` in the URL picks
a schema; the tests use one per test).
"""
from __future__ import annotations

import psycopg
from psycopg import errors

from .base import ConnectionPool, Snapshot, Store

# 10 s: enough for a loaded machine, short enough that an unreachable host fails at startup.
CONNECT_TIMEOUT_SECONDS = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS multiserve_inventory (
    id integer PRIMARY KEY CHECK (id = 1),
    initial integer NOT NULL,
    "left" integer NOT NULL CHECK ("left" >= 0)
);
CREATE TABLE IF NOT EXISTS multiserve_sales (
    ticket_no integer PRIMARY KEY,
    buyer text NOT NULL
)
"""

TAKE = """
WITH taken AS (
    UPDATE multiserve_inventory SET "left" = "left" - 1
    WHERE id = 1 AND "left" > 0
    RETURNING initial - "left" AS ticket_no
)
INSERT INTO multiserve_sales (ticket_no, buyer) SELECT ticket_no, %s FROM taken
RETURNING ticket_no
"""


class PostgresStore(Store):
    def __init__(self, url: str):
        super().__init__(url)
        self.pool = ConnectionPool(self._connect)

    def _connect(self) -> psycopg.Connection:
        try:
            # client_encoding utf8: buyers' names are Unicode, and a server whose database was
            # created SQL_ASCII (initdb under the C locale) would otherwise hand back bytes
            return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                   client_encoding="utf8")
        except psycopg.Error as exc:
            raise self.unreachable(exc) from None

    def _run(self, work):
        try:
            with self.pool.connection() as conn:
                return work(conn)
        except errors.UndefinedTable:
            raise self.not_initialised() from None
        except psycopg.Error as exc:
            raise self.unreachable(exc) from None

    def init(self, count: int, force: bool = False, *, create_dir: bool = False) -> None:
        def work(conn):
            with conn.transaction():
                conn.execute(SCHEMA)
                conn.execute("LOCK TABLE multiserve_inventory, multiserve_sales IN EXCLUSIVE MODE")
                sold = conn.execute("SELECT count(*) FROM multiserve_sales").fetchone()[0]
                if sold and not force:
                    raise self.refuse_wipe(sold)
                conn.execute("DELETE FROM multiserve_sales")
                conn.execute('INSERT INTO multiserve_inventory (id, initial, "left") VALUES (1, %s, %s) '
                             'ON CONFLICT (id) DO UPDATE SET initial = EXCLUDED.initial, "left" = EXCLUDED."left"',
                             (count, count))

        self._run(work)

    def take(self, buyer: str) -> int | None:
        def work(conn):
            row = conn.execute(TAKE, (buyer,)).fetchone()
            if row is not None:
                return row[0]
            if conn.execute("SELECT 1 FROM multiserve_inventory WHERE id = 1").fetchone() is None:
                raise self.not_initialised()
            return None

        return self._run(work)

    def left(self) -> int:
        def work(conn):
            row = conn.execute('SELECT "left" FROM multiserve_inventory WHERE id = 1').fetchone()
            if row is None:
                raise self.not_initialised()
            return row[0]

        return self._run(work)

    def snapshot(self) -> Snapshot:
        def work(conn):
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                row = conn.execute('SELECT initial, "left" FROM multiserve_inventory WHERE id = 1').fetchone()
                if row is None:
                    raise self.not_initialised()
                sales = conn.execute("SELECT ticket_no, buyer FROM multiserve_sales ORDER BY ticket_no").fetchall()
            return Snapshot(row[0], row[1], tuple(sales))

        return self._run(work)

    def close(self) -> None:
        self.pool.close()
