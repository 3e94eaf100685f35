"""The HTTP conformance suite (issue 12) on every engine."""
from multiserve.testing.http_conformance import *  # noqa: F401,F403
