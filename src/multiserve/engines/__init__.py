"""Engine registry: short name -> "module:Class", imported only when chosen (as gunicorn's
worker registry), so choosing ``thread`` never imports gevent; and whether an engine can run on
this interpreter (:func:`unavailable`): gevent has no free-threaded build (issue 13), so on a
3.13t it is not installed, and ``serve`` refuses it, compare, the lab and the tests skip it."""
from __future__ import annotations

import importlib
import importlib.util

ENGINES = {
    "process": "multiserve.engines.process_engine:ProcessEngine",
    "thread": "multiserve.engines.thread_engine:ThreadEngine",
    "threadpool": "multiserve.engines.threadpool_engine:ThreadPoolEngine",
    "gevent": "multiserve.engines.gevent_engine:GeventEngine",
    "asyncio": "multiserve.engines.asyncio_engine:AsyncioEngine",
    "hybrid": "multiserve.engines.hybrid_engine:HybridEngine",
    "multiloop": "multiserve.engines.multiloop_engine:MultiloopEngine",
}

# An engine that needs more than multiserve's own dependencies: the module it imports, and where
# to get it. gevent is an optional extra (``multiserve[gevent]``): its cffi build refuses a
# free-threaded CPython (3.13t), and there is no cp313t/cp314t gevent wheel.
NEEDS = {"gevent": ("gevent", "gevent is not installed (it has no free-threaded build; "
                              "on a GIL build: pip install 'multiserve[gevent]')")}


def unavailable(name: str) -> str | None:
    """Why engine ``name`` cannot run on this interpreter (one line), or None if it can. Looks
    the module up without importing it (importing gevent is not free)."""
    module, reason = NEEDS.get(name, (None, None))
    if module is None:
        return None
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refused it, or a stub module without a spec
        found = False
    return None if found else reason


def engine_class(name: str):
    """The engine class registered as ``name``; ValueError names the known ones."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["ENGINES", "NEEDS", "engine_class", "unavailable"]
