"""Event loop choice: uvloop when installed and wanted, the stdlib loop otherwise (as uvicorn's
``loops/auto.py``). The only module that imports uvloop."""
from __future__ import annotations

import asyncio


def new_event_loop(use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
