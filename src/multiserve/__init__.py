"""multiserve: one TCP handler under every Python concurrency model, measured side by side.

Public names: ``Service`` and ``Connection`` (write your own service), ``serve`` (run one under an
engine; returns a ``ServeStats``), ``Stop`` (stop a ``serve`` from another thread),
``ServerConfig`` (every setting), ``ENGINES`` and ``PROTOCOLS`` (the registries).
"""
from .config import ServerConfig, SettingError
from .engines import ENGINES
from .engines.base import ServeStats
from .protocol import PROTOCOLS
from .server import serve
from .services import Connection, Service
from .stop import Stop

__all__ = ["ENGINES", "PROTOCOLS", "Connection", "ServeStats", "ServerConfig", "Service", "SettingError",
           "Stop", "serve"]
__version__ = "0.1.0"
