"""Test support: a fresh, isolated store URL of each kind (pytest only).

``sqlite`` and ``json`` live in the test's tmp dir. ``postgres`` and ``redis`` need the servers
that ``.ci/services.sh`` starts (MULTISERVE_TEST_POSTGRES_URL, MULTISERVE_TEST_REDIS_URL): a test
without them is skipped with the reason, except under ``CI=true``, where it fails, so CI can
never pass by skipping them. Isolation while tests run in parallel: a PostgreSQL schema per test
(chosen through the URL's ``search_path``), a Redis database per xdist worker, flushed per test.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from . import open_store

KINDS = ("sqlite", "json", "postgres", "redis")
ENV = {"postgres": "MULTISERVE_TEST_POSTGRES_URL", "redis": "MULTISERVE_TEST_REDIS_URL"}


def server_url(kind: str) -> str:
    """The base URL of the PostgreSQL or Redis test server; skips (or fails under CI) without it."""
    var = ENV[kind]
    url = os.environ.get(var)
    if not url:
        reason = f"{var} is not set: run the tests under .ci/services.sh to start {kind}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return url


@contextlib.contextmanager
def fresh_store_url(kind: str, tmp_path):
    """Yield a URL of an empty, uninitialised store of ``kind`` that no other test uses."""
    if kind == "sqlite":
        yield f"sqlite:{tmp_path}/tickets.db"
    elif kind == "json":
        yield f"json:{tmp_path}/data.json"
    elif kind == "postgres":
        base = server_url(kind)
        schema = "t_" + uuid.uuid4().hex[:16]
        with open_store(base) as admin:  # the store's driver, so psycopg is imported in one module
            with admin.pool.connection() as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            try:
                yield base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}"
            finally:
                with admin.pool.connection() as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    elif kind == "redis":
        base = server_url(kind)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        db = 1 + int(worker.removeprefix("gw") or 0) % 15  # databases 1..15; 0 is left alone
        url = urlunsplit(urlsplit(base)._replace(path=f"/{db}"))
        with open_store(url) as store:
            store.client.flushdb()
            try:
                yield url
            finally:
                store.client.flushdb()
    else:
        raise ValueError(f"unknown store kind {kind!r}")


def marks(kind: str):
    """The pytest marks of a store kind (``postgres``/``redis`` are declared in pyproject.toml)."""
    return {"postgres": [pytest.mark.postgres], "redis": [pytest.mark.redis]}.get(kind, [])


def params():
    """``pytest.param`` for each store kind, with its marks: ``@pytest.mark.parametrize("kind", params())``."""
    return [pytest.param(kind, marks=marks(kind), id=kind) for kind in KINDS]
