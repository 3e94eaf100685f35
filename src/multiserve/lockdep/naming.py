"""A readable, unique name for each lock, read from the code that made it.

A report's cycle is only readable if no two locks in it share a name. Matching the text of the
line is not enough (``a = Lock(); b = Lock()`` would make two locks ``a``, a list comprehension
one name for all its locks), so the name comes from the exact call: the frame's current
instruction gives the call's line and column (``co_positions``, Python 3.11+), and the file's
syntax tree says what the call's value is assigned to:

====================================  =================================
``a = Lock(); b = Lock()``            ``a``, ``b``
``self.lock: Lock = Lock()``          ``self.lock``
``a, b = Lock(), Lock()``             ``a``, ``b``
``locks = [Lock(), Lock()]``          ``locks[0]``, ``locks[1]``
``locks = [Lock() for i in ...]``     ``locks[0]``, ``locks[1]``, ... (the loop variable's value)
``locks = {k: Lock() for k in ...}``  ``locks['x']``, ...
``pool.append(Lock())``               ``pool[0]``, ``pool[1]``, ... (in creation order)
anything else                         ``lock@file.py:LINE:COL``
====================================  =================================

A name made twice (a ``self.lock`` in each of two objects) gets ``#2``, ``#3``... from its second
lock on, so every lock's name is its own.
"""
from __future__ import annotations

import _thread
import ast
import functools
import itertools
import linecache
import os

# A loop variable's value names an element only when its repr is this short (a key, an index);
# a longer one (an object's repr) would bury the cycle in the report.
MAX_KEY_REPR = 24
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def call_position(frame) -> tuple[int, int, int, int] | None:
    """(line, column, end line, end column) of the call ``frame`` is executing, or None (before
    Python 3.11, or when the compiler recorded no position)."""
    positions = _positions(frame.f_code)
    if positions is None or not 0 <= frame.f_lasti // 2 < len(positions):
        return None
    position = positions[frame.f_lasti // 2]
    return None if None in position else position


@functools.lru_cache(maxsize=1024)
def _positions(code):
    getter = getattr(code, "co_positions", None)
    return tuple(getter()) if getter is not None else None


@functools.lru_cache(maxsize=256)
def _calls(filename: str, source: str) -> dict:
    """{call position: what the call is assigned to} for every call in ``source``, or {} if
    it does not parse. The value is ``(base, how)``: ``how`` is None (the base is the whole
    name), ``"literal:K"`` (element K of a list literal), ``"loop:VAR"`` (an element of a
    comprehension over VAR, None if VAR is not one name) or ``"append"``."""
    try:
        tree = ast.parse(source, filename)
    except (SyntaxError, ValueError):
        return {}
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            target = _target(node, parents)
            if target is not None:
                found[(node.lineno, node.end_lineno, node.col_offset, node.end_col_offset)] = target
    return found


def _assigned_to(value, parents):
    """The single target ``value`` is assigned to (``x = value``, ``x: T = value``), or None."""
    stmt = parents.get(value)
    if isinstance(stmt, ast.Assign) and stmt.value is value:
        return stmt.targets[0]
    if isinstance(stmt, ast.AnnAssign) and stmt.value is value:
        return stmt.target
    return None


def _target(call, parents):
    parent = parents.get(call)
    target = _assigned_to(call, parents)
    if target is not None and not isinstance(target, (ast.Tuple, ast.List)):
        return ast.unparse(target), None
    if isinstance(parent, (ast.Tuple, ast.List)):
        k = parent.elts.index(call)
        target = _assigned_to(parent, parents)
        if isinstance(target, (ast.Tuple, ast.List)) and len(target.elts) == len(parent.elts):
            return ast.unparse(target.elts[k]), None  # a, b = Lock(), Lock()
        if target is not None:
            return ast.unparse(target), f"literal:{k}"  # locks = [Lock(), Lock()]
        return None
    if isinstance(parent, _COMPREHENSIONS) and call in (getattr(parent, "elt", None), getattr(parent, "value", None)):
        target = _assigned_to(parent, parents)
        if target is None and isinstance(parents.get(parent), ast.Call):  # list(Lock() for ...)
            target = _assigned_to(parents[parent], parents)
        if target is None or isinstance(target, (ast.Tuple, ast.List)):
            return None
        loop = parent.generators[0].target if len(parent.generators) == 1 else None
        return ast.unparse(target), f"loop:{loop.id if isinstance(loop, ast.Name) else ''}"
    if (isinstance(parent, ast.Call) and parent.args == [call] and isinstance(parent.func, ast.Attribute)
            and parent.func.attr == "append"):
        return ast.unparse(parent.func.value), "append"
    return None


class Namer:
    """Gives each new lock its name; shared by the threads of one checker (it guards itself)."""

    def __init__(self):
        self._lock = _thread.allocate_lock()  # a raw lock: never one the checker would track
        self._used: dict[str, int] = {}
        self._counters: dict[tuple, itertools.count] = {}

    def name(self, frame) -> str:
        """The name of the lock whose creation ``frame`` is executing (a call in its code)."""
        position = call_position(frame)
        filename = frame.f_code.co_filename
        base = None
        if position is not None:
            source = "".join(linecache.getlines(filename, frame.f_globals))
            target = _calls(filename, source).get(position) if source else None
            if target is not None:
                base = self._element(frame, position, *target)
        if base is None:
            where = f"{frame.f_lineno}:{position[2]}" if position is not None else f"{frame.f_lineno}"
            base = f"lock@{os.path.basename(filename)}:{where}"
        with self._lock:
            seen = self._used.get(base, 0) + 1
            self._used[base] = seen
        return base if seen == 1 else f"{base}#{seen}"

    def _element(self, frame, position, base: str, how: str | None) -> str:
        if how is None:
            return base
        kind, _, arg = how.partition(":")
        if kind == "literal":
            return f"{base}[{arg}]"
        if kind == "loop" and arg and arg in frame.f_locals:
            key = repr(frame.f_locals[arg])
            if len(key) <= MAX_KEY_REPR:
                return f"{base}[{key}]"
        site = (frame.f_code.co_filename, position, base)
        with self._lock:
            counter = self._counters.setdefault(site, itertools.count())
            return f"{base}[{next(counter)}]"
