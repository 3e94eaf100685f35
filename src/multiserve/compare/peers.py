"""``compare --protocol http``: the workloads (paths of the demo app), the engine cells (engine x
interface) and the peers, the servers a user would pick instead, run by their own CLI.

Peers come from the optional extra ``pip install 'multiserve[peers]'``; one not installed is left
out with one line saying so. Each is configured as its users configure it for this load, and
with what every server of the run gets (the same listen backlog, one process):

- ``gunicorn-sync``: ``--worker-class sync``, one request at a time, no keep-alive (the worker
  closes each connection after its response: the load generator reconnects, as any client);
- ``gunicorn-gthread``: ``--threads`` = the threadpool engine's pool (32, config.py), the same
  number of threads as the engine it is compared with (the issue's table: 1 worker x 32 threads);
- ``gunicorn-gevent``: ``--worker-connections`` raised to at least the run's connections
  (its default, 1000, would cap a larger run);
- ``uvicorn``: ``--http httptools --loop uvloop`` (what ``uvicorn[standard]`` users get),
  ``--backlog``, no access log (its default logs every request);
- ``granian-wsgi`` / ``granian-asgi``: ``--interface wsgi|asgi``, ``--backlog``; WSGI with
  ``--blocking-threads 32`` (the pool the app runs on, as gthread's threads).

``--workers 1`` for every peer: one server process, as the one-process engines (hybrid keeps
its own default, one worker per core, as in the line compare). Access logs are off everywhere:
a server logging per request would spend the measured CPU on logging.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

from ..asgi import ASGI_ENGINES

# The demo app (examples/demo_app.py): WSGI ``app`` and ASGI ``asgi_app``, served from the
# project's directory (the servers run with it on their path).
DEMO_APPS = ("examples.demo_app:app", "examples.demo_app:asgi_app")
DEFAULT_WORKLOADS = "hello,sleep:10,cpu:1"
# What every built-in workload of the demo app answers: the line services' reply to "hello".
DEMO_BODY = b"HELLO\n"
# The threadpool engine's default pool (config.py, --threads): gthread and granian WSGI get as many.
POOL_THREADS = 32
# gunicorn's default --worker-connections (docs: "worker_connections", 1000).
GEVENT_WORKER_CONNECTIONS = 1000
PEER_LOG_LEVEL = "warning"


def workload_path(workload: str) -> str:
    """The request path of a workload: ``hello`` (or ``upper``) -> ``/hello``, ``sleep:MS`` ->
    ``/sleep/MS``, ``cpu:MS`` -> ``/cpu/MS``, ``tickets`` -> ``/tickets``; a path (``/api/x``)
    is taken as it is. ValueError (one line) otherwise."""
    if workload.startswith("/"):
        return workload
    name, _, arg = workload.partition(":")
    if name in ("hello", "upper") and not arg:
        return "/hello"
    if name == "tickets" and not arg:
        return "/tickets"
    if name in ("sleep", "cpu"):
        try:
            if float(arg) < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"workload {workload!r}: expected {name}:MS with MS >= 0") from None
        return f"/{name}/{arg}"
    raise ValueError(f"unknown HTTP workload {workload!r}: use hello, sleep:MS, cpu:MS, tickets or a /path")


def expected_body(workload: str, demo: bool) -> bytes | None:
    """The body every response must have: the demo app's known reply, else None (status only)."""
    if demo and not workload.startswith("/") and workload.partition(":")[0] in ("hello", "upper", "sleep", "cpu"):
        return DEMO_BODY
    return None


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str
    interface: str  # "wsgi" or "asgi"
    module: str  # what must be importable (the extra installs it)
    closest: tuple[str, ...] = ()  # the engine cells it is the closest baseline of

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def command(self, app: str, port: int, backlog: int, connections: int, python: str = "") -> list[str]:
        """``python``: the interpreter the peer is installed under (compare --python; "": this one)."""
        return [python or sys.executable, *PEER_COMMANDS[self.name](app, port, backlog, connections)]


def _gunicorn(worker: str, *extra: str):
    def command(app, port, backlog, connections):
        return ["-m", "gunicorn", "--worker-class", worker, "--workers", "1",
                "--bind", f"127.0.0.1:{port}", "--backlog", str(backlog), "--log-level", PEER_LOG_LEVEL,
                *[x.format(connections=max(GEVENT_WORKER_CONNECTIONS, connections)) for x in extra], app]

    return command


def _uvicorn(app, port, backlog, connections):
    return ["-m", "uvicorn", "--http", "httptools", "--loop", "uvloop", "--interface", "asgi3",
            "--host", "127.0.0.1", "--port", str(port), "--backlog", str(backlog), "--workers", "1",
            "--log-level", PEER_LOG_LEVEL, "--no-access-log", app]


def _granian(interface: str, *extra: str):
    def command(app, port, backlog, connections):
        return ["-m", "granian", "--interface", interface, "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--backlog", str(backlog),
                "--log-level", PEER_LOG_LEVEL, "--no-ws", *extra, app]

    return command


PEER_COMMANDS = {
    "gunicorn-sync": _gunicorn("sync"),
    "gunicorn-gthread": _gunicorn("gthread", "--threads", str(POOL_THREADS)),
    "gunicorn-gevent": _gunicorn("gevent", "--worker-connections", "{connections}"),
    "uvicorn": _uvicorn,
    "granian-wsgi": _granian("wsgi", "--blocking-threads", str(POOL_THREADS)),
    "granian-asgi": _granian("asgi"),
}

PEERS = {
    "gunicorn-sync": Peer("gunicorn-sync", "wsgi", "gunicorn", ("process/wsgi",)),
    "gunicorn-gthread": Peer("gunicorn-gthread", "wsgi", "gunicorn", ("thread/wsgi", "threadpool/wsgi")),
    "gunicorn-gevent": Peer("gunicorn-gevent", "wsgi", "gevent", ("gevent/wsgi",)),
    "uvicorn": Peer("uvicorn", "asgi", "uvicorn", ("asyncio/asgi", "hybrid/asgi", "multiloop/asgi")),
    "granian-wsgi": Peer("granian-wsgi", "wsgi", "granian", ("asyncio/wsgi", "hybrid/wsgi", "multiloop/wsgi")),
    "granian-asgi": Peer("granian-asgi", "asgi", "granian"),
}
# gunicorn's gevent worker needs gunicorn too.
_ALSO_NEEDS = {"gunicorn-gevent": "gunicorn"}

# engine cell -> the peer its figures are divided by (the same model, served by a peer)
HTTP_CLOSEST = {cell: peer.name for peer in PEERS.values() for cell in peer.closest}
# The peer the best engine is held to (the fastest in the table, WSGI).
HTTP_FASTEST = "granian-wsgi"


def peer_available(name: str) -> bool:
    peer = PEERS[name]
    return peer.available() and (name not in _ALSO_NEEDS or importlib.util.find_spec(_ALSO_NEEDS[name]) is not None)


def missing_peers() -> dict[str, str]:
    """{peer: the package it needs} for every peer not installed."""
    return {name: _ALSO_NEEDS.get(name, peer.module) for name, peer in PEERS.items() if not peer_available(name)}


def engine_cells(engines, interface: str) -> list[str]:
    """Engine cell names for an app of ``interface``: ``threadpool/wsgi``...; ASGI only on the
    event-loop engines (multiserve.asgi.ASGI_ENGINES)."""
    return [f"{e}/{interface}" for e in engines if interface == "wsgi" or e in ASGI_ENGINES]


def project_root() -> Path | None:
    """The directory holding examples/demo_app.py (the current one, else the source checkout's):
    put on the servers' path so the demo app imports. None when neither has it."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / "examples" / "demo_app.py").is_file():
            return root
    return None


def server_env() -> dict:
    """The environment of an HTTP server of the run: ours, with the project's directory first on
    PYTHONPATH (so ``examples.demo_app`` imports whatever the current directory)."""
    import os

    env = dict(os.environ)
    root = project_root()
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    return env
