"""Every engine in the registry passes the same conformance suite."""
from multiserve.testing.conformance import *  # noqa: F401,F403
