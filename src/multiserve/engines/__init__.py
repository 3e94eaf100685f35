"""Engine registry: short name -> "module:Class", imported only when chosen (as gunicorn's
worker registry), so choosing ``thread`` never imports gevent."""
from __future__ import annotations

import importlib

ENGINES = {
    "process": "multiserve.engines.process_engine:ProcessEngine",
    "thread": "multiserve.engines.thread_engine:ThreadEngine",
    "threadpool": "multiserve.engines.threadpool_engine:ThreadPoolEngine",
    "gevent": "multiserve.engines.gevent_engine:GeventEngine",
    "asyncio": "multiserve.engines.asyncio_engine:AsyncioEngine",
    "hybrid": "multiserve.engines.hybrid_engine:HybridEngine",
    "multiloop": "multiserve.engines.multiloop_engine:MultiloopEngine",
}


def engine_class(name: str):
    """The engine class registered as ``name``; ValueError names the known ones."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["ENGINES", "engine_class"]
