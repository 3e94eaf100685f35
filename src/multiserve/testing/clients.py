"""Real client programs the tests drive (curl, wrk): found on PATH, or the test skips saying
how to install it; under ``CI=true`` a missing one fails instead (.ci/run installs them from
Debian's packages, so a skip there would hide a broken set-up)."""
from __future__ import annotations

import os
import shutil

import pytest


def real_client(name: str) -> str:
    """The path of the program ``name`` (the Debian package of the same name)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (.ci/run installs it from Debian's packages)")
        pytest.skip(f"{name} is not installed (apt-get install -y {name})")
    return path
