"""Listening sockets: bind, listen, SO_REUSEADDR/SO_REUSEPORT."""
from __future__ import annotations

import socket


def bind_listener(host: str, port: int, backlog: int, *, reuse_port: bool = False) -> socket.socket:
    """Return a listening TCP socket (blocking). Raises OSError with the address in the message."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def address_of(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return host, port
