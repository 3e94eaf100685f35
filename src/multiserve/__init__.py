"""multiserve: one TCP handler under every Python concurrency model, measured side by side.

Public names: ``Service`` and ``Connection`` (write your own service), ``serve`` (run one under an
engine), ``ServerConfig`` (every setting), ``ENGINES`` (the engine registry).
"""
from .config import ServerConfig
from .engines import ENGINES
from .server import serve
from .services import Connection, Service

__all__ = ["ENGINES", "Connection", "ServerConfig", "Service", "serve"]
__version__ = "0.1.0"
