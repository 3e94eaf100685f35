"""``redis://...``: an atomic Lua script; durable when the server runs AOF with fsync always.

(Named ``redis_store`` so the module never shadows the ``redis`` package.)

The sale is one script, and Redis runs a script alone, start to end: check ``left``, decrement,
record the ticket in the ledger hash. Durability is the server's setting, not ours: with
``appendonly yes`` and ``appendfsync always`` Redis fsyncs the AOF before it replies, so a
``SOLD`` follows a flushed write; with the default ``everysec`` up to a second of sales can be
lost in a crash. The store logs one warning at open when the server is not configured so.
"""
from __future__ import annotations

import logging

import redis

from .base import Snapshot, Store

log = logging.getLogger(__name__)

# One hash tag, so the three keys stay on one slot should the server be a cluster.
KEYS = ("{multiserve:tickets}:initial", "{multiserve:tickets}:left", "{multiserve:tickets}:sales")
# 10 s, as the PostgreSQL store: fail fast at startup on an unreachable host.
TIMEOUT_SECONDS = 10

# Returns -1 when uninitialised, 0 when sold out, else the ticket number.
TAKE = """
local left = tonumber(redis.call('GET', KEYS[2]))
if left == nil then return -1 end
if left <= 0 then return 0 end
left = redis.call('DECR', KEYS[2])
local ticket = tonumber(redis.call('GET', KEYS[1])) - left
redis.call('HSET', KEYS[3], ticket, ARGV[1])
return ticket
"""


class RedisStore(Store):
    def __init__(self, url: str):
        super().__init__(url)
        try:
            # redis-py's client is thread-safe (a pool inside) and resets its pool after a fork.
            self.client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_SECONDS,
                                               socket_connect_timeout=TIMEOUT_SECONDS)
        except ValueError as exc:
            raise self.unreachable(exc) from None
        self._take = self.client.register_script(TAKE)

    def _run(self, work):
        try:
            return work(self.client)
        except redis.RedisError as exc:
            raise self.unreachable(exc) from None

    def durability_warning(self) -> str | None:
        """Why a ``SOLD`` from this server might not survive a crash, or None."""
        try:
            conf = self.client.config_get("append*")
        except redis.RedisError:
            return None  # CONFIG may be disabled (managed Redis): we cannot tell
        if conf.get("appendonly") != "yes" or conf.get("appendfsync") != "always":
            return (f"store {self.name}: appendonly={conf.get('appendonly')} appendfsync={conf.get('appendfsync')}; "
                    "acknowledged sales survive a crash only with appendonly yes, appendfsync always")
        return None

    def init(self, count: int, force: bool = False, *, create_dir: bool = False) -> None:
        def work(client):
            with client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(KEYS[2])
                        sold = pipe.hlen(KEYS[2])
                        if sold and not force:
                            raise self.refuse_wipe(sold)
                        pipe.multi()
                        pipe.delete(KEYS[2])
                        pipe.set(KEYS[0], count)
                        pipe.set(KEYS[1], count)
                        pipe.execute()
                        return
                    except redis.WatchError:
                        continue

        self._run(work)

    def take(self, buyer: str) -> int | None:
        result = self._run(lambda client: int(self._take(keys=KEYS, args=[buyer])))
        if result < 0:
            raise self.not_initialised()
        return result or None

    def left(self) -> int:
        value = self._run(lambda client: client.get(KEYS[1]))
        if value is None:
            raise self.not_initialised()
        return int(value)

    def snapshot(self) -> Snapshot:
        def work(client):
            with client.pipeline(transaction=True) as pipe:
                return pipe.get(KEYS[0]).get(KEYS[1]).hgetall(KEYS[2]).execute()

        initial, left, sales = self._run(work)
        if initial is None or left is None:
            raise self.not_initialised()
        ledger = sorted((int(n), b.decode("utf-8", "replace")) for n, b in sales.items())
        return Snapshot(int(initial), int(left), tuple(ledger))

    def close(self) -> None:
        self.client.close()
