"""``json:PATH``: the tutorial's ``data.json``, made safe.

The file is ``{"ticket_num": LEFT, "initial": N, "sales": [[ticket_no, buyer], ...]}``
(``ticket_num`` is the tutorial's own name for the tickets left).

Why each step:

- The lock is ``flock`` on a separate, stable file ``PATH.lock``. Locking the data file itself is
  wrong: we replace it by renaming, so a waiter that opened the old inode would get the lock on a
  file nobody reads any more, read stale data, and oversell.
- ``flock`` belongs to an open file description, not to a thread or process, so every operation
  opens the lock file afresh: two threads of one process then exclude each other exactly as two
  processes do.
- A write goes to a temp file in the same directory, is fsynced, renamed over ``PATH``, and the
  directory is fsynced: after a crash at any instant ``PATH`` is the old file or the new one, never
  a torn one, and a ``SOLD`` reply follows a rename that is on disk.

:func:`unsafe_buy` is the tutorial's naive version (read, pause, write, no lock) kept so that
``multiserve tickets rush --unsafe`` can show the race the lock prevents.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time

from .base import Snapshot, Store, check_directory, file_store_path


class JsonStore(Store):
    def __init__(self, url: str):
        super().__init__(url)
        self.path, self.fsync = file_store_path(url)  # fsync False only to measure its cost
        if not self.path:
            raise self.unreachable(ValueError("json: needs a path, e.g. json:data.json"))
        self.lock_path = self.path + ".lock"

    @contextlib.contextmanager
    def _locked(self):
        if not os.path.exists(self.lock_path):  # O_CREAT below must not be the first to find out
            check_directory(self.name, self.path)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self.unreachable(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the description releases the lock

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise self.not_initialised() from None
        except ValueError as exc:  # not JSON, or not UTF-8
            raise self.damaged(self.path, f"not JSON: {exc}") from None
        except OSError as exc:
            raise self.unreachable(exc) from None
        if not isinstance(data, dict) or not isinstance(data.get("ticket_num"), int) \
                or not isinstance(data.get("sales", []), list):
            raise self.damaged(self.path, "no integer ticket_num or no list of sales")
        return data

    def _write(self, data: dict) -> None:
        write_atomically(self.path, data, fsync=self.fsync)

    def init(self, count: int, force: bool = False, *, create_dir: bool = False) -> None:
        check_directory(self.name, self.path, create=create_dir)
        with self._locked():
            if os.path.exists(self.path):
                sold = len(self._read().get("sales", []))
                if sold and not force:
                    raise self.refuse_wipe(sold)
            self._write({"ticket_num": count, "initial": count, "sales": []})

    def take(self, buyer: str) -> int | None:
        with self._locked():
            data = self._read()
            left = data["ticket_num"]
            if left <= 0:
                return None
            ticket = data["initial"] - left + 1
            data["ticket_num"] = left - 1
            data["sales"].append([ticket, buyer])
            self._write(data)
            return ticket

    def left(self) -> int:
        with self._locked():
            return self._read()["ticket_num"]

    def snapshot(self) -> Snapshot:
        with self._locked():
            data = self._read()
        try:
            sales = tuple((int(n), str(b)) for n, b in data.get("sales", []))
            initial = int(data.get("initial", data["ticket_num"] + len(sales)))
        except (TypeError, ValueError):
            raise self.damaged(self.path, "a sale is not [ticket_no, buyer]") from None
        return Snapshot(initial, data["ticket_num"], sales)


def write_atomically(path: str, data: dict, *, fsync: bool = True) -> None:
    """Replace ``path`` by ``data`` as JSON: temp file, fsync, rename, fsync the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tickets-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"), ensure_ascii=False)  # names as UTF-8, not \u escapes
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def unsafe_buy(path: str, buyer: str, pause: float) -> int | None:
    """The tutorial's buyer: read the count, pause (the window), write it back; no lock at all.

    Two buyers that read the same count both "sell" the same ticket. The write itself is still
    atomic (rename), so readers never see a torn file: the only bug shown is the missing lock.
    """
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    left = data["ticket_num"]
    if left <= 0:
        return None
    time.sleep(pause)
    ticket = data["initial"] - left + 1
    data["ticket_num"] = left - 1
    data["sales"].append([ticket, buyer])
    write_atomically(path, data, fsync=False)
    return ticket
