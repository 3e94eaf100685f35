"""The ticket store interface: one inventory, one atomic take-one-ticket operation.

A store holds ``initial`` (tickets put on sale by ``init``), ``left`` (the counter buyers see) and
a ledger of sales ``(ticket_no, buyer)``. Ticket numbers run 1..initial in sale order:
``ticket_no = initial - left`` just after the sale. The contract every store keeps:

``take(buyer)``
    Atomically: if ``left > 0``, decrement it, record ``(ticket_no, buyer)`` and return
    ``ticket_no``; else return None. When it returns a number, the sale is durable (committed and
    flushed as the store's durability allows); if it raises, the sale may or may not have happened.
``left()``, ``snapshot()``
    Reads. ``snapshot`` is one consistent view of initial, left and the ledger.
``init(count, force)``
    Put ``count`` tickets on sale, wiping the ledger; refuses (StoreError) to wipe sales unless
    ``force``.

A store object may be shared by the threads of one process (each store guards itself) but never
across a fork: open one per serving process. Every failure is a :class:`StoreError` whose message
is one line and names the URL without its password.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from urllib.parse import urlsplit, urlunsplit

# A buyer's name is at most this many characters (code points, not bytes): the rule.
BUYER_MAX_CHARS = 64
BUYER_RULE = f"1-{BUYER_MAX_CHARS} printable characters (UTF-8), no whitespace"


def valid_buyer(name: str) -> bool:
    """True for 1-64 printable characters without whitespace, in any script (``用户0#号``, ``José``).

    ``str.isprintable`` already refuses control and separator characters (tab, newline, NBSP,
    U+2028) except the ASCII space, which the second test refuses. Stores keep the name as UTF-8.
    """
    return (0 < len(name) <= BUYER_MAX_CHARS and name.isprintable()
            and not any(ch.isspace() for ch in name))


def parse_buyer(raw: bytes) -> str | None:
    """The buyer named by the bytes of a ``BUY`` line, or None if they are not a valid name
    (invalid UTF-8 included)."""
    if len(raw) > 4 * BUYER_MAX_CHARS:  # UTF-8 needs at most 4 bytes a character: surely too long
        return None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name if valid_buyer(name) else None


class StoreError(RuntimeError):
    """The store is unreachable, uninitialised or refused an operation (a one-line message)."""


def redact(url: str) -> str:
    """``url`` without its password (``postgresql://u:***@host/db``): safe for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    userinfo = netloc[0].partition(":")[0] + ":***"
    return urlunsplit(parts._replace(netloc=userinfo + "@" + netloc[2]))


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (drivers often add hints on later lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def file_store_path(url: str) -> tuple[str, bool]:
    """``sqlite:PATH`` or ``json:PATH``, optionally ``?fsync=off``: returns (PATH, fsync).

    ``fsync=off`` exists only to measure what durability costs (docs/benchmarks.md): a store
    opened so may lose acknowledged sales in a crash.
    """
    rest = url.partition(":")[2]
    path, _, query = rest.partition("?")
    if query not in ("", "fsync=on", "fsync=off"):
        raise StoreError(f"store {url}: the only option is ?fsync=off (for measurements)")
    return path, query != "fsync=off"


def check_directory(name: str, path: str, *, create: bool = False) -> None:
    """Make sure the directory that will hold the store file ``path`` exists (``create``: make it).

    Never creates a directory unasked (a typo in a path must not leave a tree of directories
    behind). Raises StoreError naming the missing directory, or the path component that is a
    file ("not a directory"), or ``path`` itself if it is a directory.
    """
    if os.path.isdir(path):
        raise StoreError(f"store {name}: {path} is a directory, not a store file")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return
    nearest = directory
    while not os.path.lexists(nearest):
        nearest = os.path.dirname(nearest)
    if not os.path.isdir(nearest):
        raise StoreError(f"store {name}: {nearest} is not a directory")
    if not create:
        raise StoreError(f"store {name}: directory {directory} does not exist "
                         "(create it, or let `multiserve tickets init --create-dir` create it)")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"store {name}: cannot create directory {directory}: {exc.strerror or exc}") from None


@dataclasses.dataclass(frozen=True)
class Snapshot:
    initial: int
    left: int
    sales: tuple[tuple[int, str], ...]  # (ticket_no, buyer), in the store's order

    @property
    def sold(self) -> int:
        return len(self.sales)


def violations(snap: Snapshot) -> list[str]:
    """The invariants ``tickets check`` enforces; an empty list means the store is sound."""
    problems = []
    if snap.sold + snap.left != snap.initial:
        problems.append(f"sold {snap.sold} + left {snap.left} != initial {snap.initial}")
    seen: set[int] = set()
    twice = sorted({n for n, _ in snap.sales if n in seen or seen.add(n)})
    if twice:
        problems.append(f"{len(twice)} ticket numbers sold more than once (first: {twice[:5]})")
    outside = sorted(n for n in seen if not 1 <= n <= snap.initial)
    if outside:
        problems.append(f"{len(outside)} ticket numbers outside 1..{snap.initial} (first: {outside[:5]})")
    nameless = sum(1 for _, b in snap.sales if not isinstance(b, str) or not valid_buyer(b))
    if nameless:
        problems.append(f"{nameless} sales without a valid buyer")
    return problems


class Store:
    """Base class: subclasses implement the five operations below."""

    def __init__(self, url: str):
        self.url = url
        self.name = redact(url)

    def init(self, count: int, force: bool = False, *, create_dir: bool = False) -> None:
        """``create_dir``: a file store may create its missing parent directory (else it refuses)."""
        raise NotImplementedError

    def take(self, buyer: str) -> int | None:
        raise NotImplementedError

    def left(self) -> int:
        raise NotImplementedError

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # shared wording, so every store says the same thing the same way
    def not_initialised(self) -> StoreError:
        return StoreError(f"store {self.name} is not initialised: run `multiserve tickets init --store URL --count N`")

    def unreachable(self, exc: BaseException) -> StoreError:
        return StoreError(f"cannot use store {self.name}: {one_line(exc)}")

    def damaged(self, path: str, what: str) -> StoreError:
        """A store file that cannot be read as a store: even ``init --force`` will not overwrite it
        (it may be someone else's file), so the message says how to start over."""
        return StoreError(f"store {self.name} is damaged or not a ticket store ({what}): move {path} away "
                          "(or delete it), then run `multiserve tickets init --store URL --count N` to start over")

    def refuse_wipe(self, sold: int) -> StoreError:
        return StoreError(f"store {self.name} already has {sold} sales: add --force to wipe them")


class ConnectionPool:
    """Idle driver connections shared by the threads (or greenlets) of one process.

    Why not a connection per thread: the thread engine starts a thread per client, so per-thread
    connections would be opened and dropped per client; a pool keeps at most as many connections
    as requests run at once. A connection is used by one thread at a time (sqlite3 needs
    ``check_same_thread=False`` for that hand-over). ``connect`` makes a new one; a connection
    whose use raised is closed rather than returned (it may be mid-transaction or broken).
    """

    def __init__(self, connect, close=lambda conn: conn.close()):
        self._connect = connect
        self._close = close
        self._idle: list = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @contextlib.contextmanager
    def connection(self):
        if os.getpid() != self._pid:
            raise RuntimeError("a store was used across a fork: open one per process")
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                self._close(conn)
            raise
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                self._close(conn)
