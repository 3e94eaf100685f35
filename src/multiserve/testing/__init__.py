"""Test support that ships with multiserve: start a real server, talk to it, stop it.

``running_server(...)`` starts ``python -m multiserve serve ... --port 0`` as a subprocess, waits
for its ready line (never sleeps to guess), and always kills it by PID at the end. The
conformance suite in :mod:`multiserve.testing.conformance` holds every engine to the same tests.
"""
from .server_process import ServerProcess, running_server, Client

__all__ = ["Client", "ServerProcess", "running_server"]
