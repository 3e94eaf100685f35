"""Which interpreter runs this process, and whether the GIL is on *now* (issue 13).

A free-threaded CPython (PEP 703: built ``--disable-gil``, 3.13t/3.14t) turns the GIL back on at
run time when it imports an extension module that does not declare free-threading support
(``RuntimeWarning: The global interpreter lock (GIL) has been enabled to load module ...``), or
when told to (``-X gil=1``, ``PYTHON_GIL=1``). So the build alone says nothing about a
measurement: servers and the lab read :func:`gil_enabled` after all their imports and print it
beside every figure (the ready line, ``lab`` JSON, compare's cells).
"""
from __future__ import annotations

import logging
import os
import platform
import sys
import sysconfig

log = logging.getLogger(__name__)


def free_threaded_build() -> bool:
    """Built with ``--disable-gil`` (``Py_GIL_DISABLED``): the GIL *can* be off."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def gil_enabled() -> bool:
    """``sys._is_gil_enabled()`` where it exists (3.13+); every older CPython has the GIL."""
    probe = getattr(sys, "_is_gil_enabled", None)
    return bool(probe()) if probe is not None else True


def version_tag() -> str:
    """``3.13.5t`` for a free-threaded build (the ``t`` of its ABI tag, cp313t), ``3.11.7`` else."""
    return platform.python_version() + ("t" if free_threaded_build() else "")


def describe() -> dict:
    """The JSON form: ``executable, implementation, version, free_threaded, gil_enabled``."""
    return {"executable": sys.executable, "implementation": platform.python_implementation(),
            "version": version_tag(), "free_threaded": free_threaded_build(), "gil_enabled": gil_enabled()}


def ready_fields() -> str:
    """What the ready line says about the interpreter: ``python=3.13.5t gil=off``."""
    return f"python={version_tag()} gil={'on' if gil_enabled() else 'off'}"


def why_gil_on() -> str | None:
    """On a free-threaded build whose GIL is on: why, in words; None otherwise."""
    if not free_threaded_build() or not gil_enabled():
        return None
    if getattr(sys.flags, "gil", None) == 1 or os.environ.get("PYTHON_GIL") == "1":
        return "asked for (-X gil=1 or PYTHON_GIL=1)"
    return ("an imported extension module does not declare free-threading support "
            "(Python's RuntimeWarning names it)")


def warn_if_gil_reenabled(what: str = "this process") -> bool:
    """Log a loud warning when a free-threaded build runs with the GIL on; True if it did."""
    reason = why_gil_on()
    if reason is not None:
        log.warning("THE GIL IS ON in %s, on a free-threaded build (%s): threads do not run Python in "
                    "parallel, so its figures are a GIL build's", what, reason)
    return reason is not None


def label(info: dict) -> str:
    """``CPython 3.13.5t, GIL off (/path/python3.13t)`` from :func:`describe`'s dict."""
    return (f"{info.get('implementation', 'CPython')} {info['version']}, GIL {'on' if info['gil_enabled'] else 'off'}"
            + (f" ({info['executable']})" if info.get("executable") else ""))


def python_option(text: str) -> tuple[str, str]:
    """``--python NAME=PATH`` (compare, lab): (name, path); ValueError in one line if malformed
    or if PATH is not an executable file (looked up on PATH when it has no slash)."""
    import shutil

    name, sep, path = text.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ValueError(f"expected NAME=PATH (e.g. ft=.venv-ft/bin/python), got {text!r}")
    found = path if os.sep in path else shutil.which(path)
    if not found or not (os.path.isfile(found) and os.access(found, os.X_OK)):
        raise ValueError(f"--python {name}: {path} is not an executable file")
    return name, os.path.abspath(found)


def query(path: str, timeout: float = 60.0) -> dict:
    """Ask interpreter ``path`` (with multiserve installed) what it is and which engines it can
    run: ``multiserve engines --json``'s object. RuntimeError in one line if it cannot say."""
    import json
    import subprocess

    try:
        out = subprocess.run([path, "-m", "multiserve", "engines", "--json"], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{path}: cannot run it: {exc}") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{path}: `-m multiserve engines` failed (is multiserve installed there?): {last}")
    return json.loads(out.stdout)
