"""What lockdep reports: small frozen records, each able to describe itself in plain text."""
from __future__ import annotations

import dataclasses
import linecache
import os


@dataclasses.dataclass(frozen=True)
class Site:
    """A line of code: where a lock was created, taken or waited for."""

    file: str
    line: int

    @classmethod
    def of(cls, frame) -> "Site":
        return cls(frame.f_code.co_filename, frame.f_lineno)

    @property
    def text(self) -> str:
        return linecache.getline(self.file, self.line).strip()

    def __str__(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}: {self.text}"

    def to_json(self) -> dict:
        return {"file": portable(self.file), "line": self.line, "code": self.text}


# The folder holding the multiserve package: a site inside it is written relative to it.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def portable(path: str) -> str:
    """``path`` as JSON reports keep it: ``multiserve/lab/deadlock.py`` for the package's own
    files (a report committed or sent on names no checkout's folder), else as given."""
    absolute = os.path.abspath(path)
    if absolute.startswith(_PACKAGE_PARENT + os.sep):
        return os.path.relpath(absolute, _PACKAGE_PARENT)
    return path


@dataclasses.dataclass(frozen=True)
class Edge:
    """``thread`` took ``acquired`` (at ``acquired_at``) while holding ``held`` (taken at ``held_at``)."""

    held: str
    acquired: str
    thread: str
    held_at: Site
    acquired_at: Site

    def describe(self) -> str:
        return (f"  {self.thread} took {self.acquired} while holding {self.held}\n"
                f"    holding {self.held} since {self.held_at}\n"
                f"    took {self.acquired} at {self.acquired_at}")

    def to_json(self) -> dict:
        return {"thread": self.thread, "held": self.held, "acquired": self.acquired,
                "held_at": self.held_at.to_json(), "acquired_at": self.acquired_at.to_json()}


@dataclasses.dataclass(frozen=True)
class Inversion:
    """Locks taken in an order that closes a cycle: a deadlock waiting for the wrong timing."""

    edges: tuple[Edge, ...]

    @property
    def locks(self) -> tuple[str, ...]:
        return tuple(e.held for e in self.edges)

    @property
    def threads(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.thread for e in self.edges))

    def describe(self) -> str:
        cycle = " -> ".join([*self.locks, self.locks[0]])
        return ("lockdep: possible lock inversion (a deadlock if the timing changes): " + cycle + "\n"
                + "\n".join(e.describe() for e in self.edges))

    def to_json(self) -> dict:
        return {"kind": "inversion", "locks": list(self.locks), "threads": list(self.threads),
                "edges": [e.to_json() for e in self.edges]}


@dataclasses.dataclass(frozen=True)
class WaitLink:
    """One thread of a deadlock: it holds ``holds`` and waits for ``waits_for``."""

    thread: str
    holds: str
    held_at: Site
    waits_for: str
    wait_at: Site

    def describe(self) -> str:
        return (f"  {self.thread} holds {self.holds} (taken at {self.held_at})\n"
                f"    and waits for {self.waits_for} (at {self.wait_at})")

    def to_json(self) -> dict:
        return {"thread": self.thread, "holds": self.holds, "held_at": self.held_at.to_json(),
                "waits_for": self.waits_for, "wait_at": self.wait_at.to_json()}


@dataclasses.dataclass(frozen=True)
class Deadlock:
    """Threads each waiting for a lock the next one holds, the last for one the first holds."""

    links: tuple[WaitLink, ...]

    @property
    def locks(self) -> tuple[str, ...]:
        return tuple(link.holds for link in self.links)

    @property
    def threads(self) -> tuple[str, ...]:
        return tuple(link.thread for link in self.links)

    def describe(self) -> str:
        return (f"lockdep: DEADLOCK: {len(self.links)} thread(s) wait for each other; "
                f"raising DeadlockError in {self.links[0].thread}\n" + "\n".join(k.describe() for k in self.links))

    def to_json(self) -> dict:
        return {"kind": "deadlock", "locks": list(self.locks), "threads": list(self.threads),
                "links": [k.to_json() for k in self.links]}


class DeadlockError(RuntimeError):
    """Raised in the thread that found a deadlock cycle; ``.deadlock`` says which."""

    def __init__(self, deadlock: Deadlock):
        super().__init__(deadlock.describe())
        self.deadlock = deadlock
