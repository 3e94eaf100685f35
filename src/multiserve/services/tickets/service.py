"""The ticket office service: ``QUERY`` -> ``LEFT <n>``; ``BUY <buyer>`` -> ``SOLD <no> <buyer>``
or ``SOLDOUT``; anything else -> ``ERR <reason>``.

The store is opened once per serving process, lazily, on the first request after a fork (the
``process`` engine forks per client, ``hybrid`` forks workers; a driver connection must never be
shared across a fork). ``open()`` in the parent only checks that the store is reachable and
initialised, so ``serve`` fails at startup with one line rather than on every request, and closes
what it opened before anything forks. Store calls block, hence ``blocking = True``: event-loop
engines call ``handle`` on their thread pool. The store commits before ``take`` returns, so the
reply leaves after the sale is durable.
"""
from __future__ import annotations

import logging
import os
import threading

from ...stores import BUYER_RULE, DEFAULT_URL, StoreError, open_store, parse_buyer
from ..base import Service

log = logging.getLogger(__name__)

SOLDOUT = b"SOLDOUT\n"
# Echo at most this much of an unknown command back: the reply stays one short line.
ECHO_LIMIT = 32


def _err(reason: str) -> bytes:
    return b"ERR " + reason.encode("ascii", "replace") + b"\n"


class TicketService(Service):
    blocking = True
    cpu_bound = False

    def __init__(self, store_url: str = DEFAULT_URL):
        self.store_url = store_url
        self._store = None
        self._inherited = None
        self._pid = None
        self._lock = threading.Lock()
        self._commands = {b"QUERY": self._query, b"BUY": self._buy}

    # -- life cycle ----------------------------------------------------------------------------
    def open(self) -> None:
        """Fail fast: raises StoreError (a RuntimeError, one line) if the store is unusable."""
        store = open_store(self.store_url)
        try:
            store.left()
            warning = getattr(store, "durability_warning", lambda: None)()
            if warning:
                log.warning("%s", warning)
        finally:
            store.close()

    def close(self) -> None:
        with self._lock:
            store, pid = self._store, self._pid
            self._store = self._pid = None
        if store is not None and pid == os.getpid():
            store.close()

    def store(self):
        """This process's store, opened on first use after a fork."""
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    # An inherited store is kept, never closed nor garbage-collected here: that
                    # would end the parent's connections (a Terminate message on a shared socket).
                    self._inherited = self._store
                    self._store = open_store(self.store_url)
                    self._pid = pid
        return self._store

    # -- requests --------------------------------------------------------------------------------
    def handle(self, request: bytes, conn) -> bytes:
        command, _, arg = request.rstrip(b"\r\n").partition(b" ")
        action = self._commands.get(command)
        if action is None:
            shown = command[:ECHO_LIMIT].decode("ascii", "replace") or "(empty line)"
            return _err(f"unknown command {shown!r}: use QUERY or BUY <buyer>")
        try:
            return action(arg)
        except StoreError as exc:
            log.error("%s", exc)
            return _err("store unavailable")

    def _query(self, arg: bytes) -> bytes:
        if arg:
            return _err("QUERY takes no argument")
        return b"LEFT %d\n" % self.store().left()

    def _buy(self, arg: bytes) -> bytes:
        buyer = parse_buyer(arg)
        if buyer is None:
            return _err(f"BUY needs a buyer: {BUYER_RULE}")
        store = self.store()
        try:
            ticket = store.take(buyer)
        except StoreError as exc:
            # The sale may have committed before the store failed: say so, so a client records
            # the attempt as unknown (Jepsen's "info"), never as surely unsold.
            log.error("%s", exc)
            return _err("unknown outcome: store unavailable")
        if ticket is None:
            return SOLDOUT
        return b"SOLD %d %s\n" % (ticket, arg)
