"""Ticket stores: one interface (:class:`Store`), one module per backend, chosen by URL scheme.

``open_store(url)`` imports only the chosen backend, so the sqlite default never imports psycopg
or redis. URLs: ``sqlite:PATH`` (the default, ``sqlite:tickets.db``), ``json:PATH``,
``postgresql://...`` (or ``postgres://``), ``redis://...`` (or ``rediss://``).
"""
from __future__ import annotations

import importlib

from .base import BUYER_RULE, Snapshot, Store, StoreError, parse_buyer, redact, valid_buyer, violations

DEFAULT_URL = "sqlite:tickets.db"

# URL scheme -> "module:Class", imported when chosen (as the engine registry).
STORES = {
    "sqlite": "multiserve.stores.sqlite:SqliteStore",
    "json": "multiserve.stores.jsonfile:JsonStore",
    "postgresql": "multiserve.stores.postgres:PostgresStore",
    "postgres": "multiserve.stores.postgres:PostgresStore",
    "redis": "multiserve.stores.redis_store:RedisStore",
    "rediss": "multiserve.stores.redis_store:RedisStore",
}


def open_store(url: str, **options) -> Store:
    """The store for ``url``. Opening connects lazily: the first operation may raise StoreError.

    Raises StoreError for an unknown scheme or a driver that is not installed.
    """
    scheme = url.partition(":")[0].lower()
    try:
        target = STORES[scheme]
    except KeyError:
        raise StoreError(f"unknown store {redact(url)!r}: use sqlite:PATH, json:PATH, postgresql://... "
                         "or redis://...") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StoreError(f"store {redact(url)} needs a driver that is not installed: {exc}") from None
    return getattr(module, class_name)(url, **options)


__all__ = ["BUYER_RULE", "DEFAULT_URL", "STORES", "Snapshot", "Store", "StoreError", "open_store", "parse_buyer",
           "redact", "valid_buyer", "violations"]
