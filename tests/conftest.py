"""Suite-wide: a test parametrized with an engine this interpreter cannot run (gevent on a
free-threaded build, where it is not installed) is skipped with the reason, never failed and
never silently dropped (issue 13). The parameter counts when any value of the test's
parametrization (a name, or a name inside a tuple such as an engine pair) is such an engine, or
a compare baseline built on one."""
from __future__ import annotations

import pytest

from multiserve.compare.runner import BASELINE_NEEDS_ENGINE
from multiserve.engines import ENGINES, unavailable

UNAVAILABLE = {name: reason for name in ENGINES if (reason := unavailable(name))}
# a compare baseline served by such an engine's library (gevent-streamserver: gevent)
UNAVAILABLE.update({name: UNAVAILABLE[engine] for name, engine in BASELINE_NEEDS_ENGINE.items()
                    if engine in UNAVAILABLE})


def _names(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _names(item)


def pytest_collection_modifyitems(config, items):
    if not UNAVAILABLE:
        return
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        for value in callspec.params.values():
            hit = next((n for n in _names(value) if n in UNAVAILABLE), None)
            if hit is not None:
                item.add_marker(pytest.mark.skip(reason=f"{hit} unavailable here: {UNAVAILABLE[hit]}"))
                break
