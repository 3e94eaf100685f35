"""Listening sockets: where a server listens (``--bind``, ``--host/--port``, systemd socket
activation), binding, SO_REUSEADDR/SO_REUSEPORT, unix socket files.

``open_listeners(config)`` is what ``multiserve.server`` calls: it returns the :class:`Listener`
list, each a socket an engine accepts on plus what to undo at exit (a unix socket file is removed).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import stat

log = logging.getLogger(__name__)

# sd_listen_fds(3): passed sockets start at descriptor 3 (SD_LISTEN_FDS_START).
SD_LISTEN_FDS_START = 3


@dataclasses.dataclass(frozen=True)
class BindAddress:
    """One parsed ``--bind``: ``kind`` is "tcp" (``host``, ``port``), "unix" (``path``) or "fd"
    (``fd``). ``str()`` gives it back in the form ``--bind`` takes."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_bind(text: str) -> BindAddress:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``unix:PATH`` or ``fd://N`` (gunicorn's ``--bind`` forms).
    Raises ValueError saying what was expected."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected HOST:PORT, [::1]:PORT, unix:PATH or fd://N, got {text!r}")
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path:
            raise ValueError("unix: needs a path, as in unix:/run/multiserve.sock")
        return BindAddress("unix", path=path)
    if text.startswith("fd://"):
        number = text[len("fd://"):]
        if not number.isdigit():
            raise ValueError(f"fd:// needs a descriptor number, as in fd://3, got {text!r}")
        return BindAddress("fd", fd=int(number))
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address is written in brackets, as in [::1]:8080, got {text!r}")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, [::1]:PORT, unix:PATH or fd://N, got {text!r}")
    return BindAddress("tcp", host=host, port=int(port))


@dataclasses.dataclass
class Listener:
    """A listening socket and how it came to be. ``address``: what the ready line says (the
    bound address, with the port the kernel picked). ``path``: a unix socket file we made, which
    ``close()`` removes (if it is still ours)."""

    sock: socket.socket
    address: BindAddress
    path: str | None = None
    _inode: tuple | None = None

    def close(self) -> None:
        self.sock.close()
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:  # not a successor's socket file
                os.unlink(self.path)
        except OSError:
            pass


def open_listeners(config) -> list[Listener]:
    """Every listener of a server, in order: systemd's sockets when ``LISTEN_PID`` names this
    process, else one per ``config.bind`` address (``--bind`` is repeatable), else
    ``config.host``/``config.port``. All or nothing: when one cannot be opened, those opened
    before it are closed (their unix socket files removed) and OSError (with the address) or
    ValueError (a socket that cannot serve) is raised with one line."""
    inherited = systemd_sockets()
    listeners: list[Listener] = []
    if inherited:
        try:
            for sock in inherited:
                listeners.append(adopt_fd(sock.fileno()))
                sock.detach()  # the Listener's socket owns the descriptor now
        except BaseException:
            close_all(listeners)
            for sock in inherited[len(listeners):]:
                sock.close()
            raise
        log.info("socket activation: serving %s (fd %s); --bind/--host/--port ignored",
                 ", ".join(str(listener.address) for listener in listeners),
                 ", ".join(str(SD_LISTEN_FDS_START + i) for i in range(len(listeners))))
        return listeners
    wheres = [parse_bind(address) for address in config.bind] or \
        [BindAddress("tcp", host=config.host, port=config.port)]
    try:
        for where in wheres:
            listeners.append(open_one(where, config))
    except BaseException:
        close_all(listeners)
        raise
    return listeners


def open_one(where: BindAddress, config) -> Listener:
    """The listener of one address (``config`` gives its backlog, unix mode, SO_REUSEPORT)."""
    if where.kind == "fd":
        return adopt_fd(where.fd)
    if where.kind == "unix":
        return bind_unix(where.path, config.backlog, config.unix_mode)
    sock = bind_listener(where.host, where.port, config.backlog,
                         reuse_port=config.reuse_port and config.engine == "hybrid")
    return Listener(sock, describe(sock))


def close_all(listeners) -> None:
    """Close every listener (and remove its unix socket file), in order."""
    for listener in listeners:
        listener.close()


def systemd_sockets() -> list[socket.socket]:
    """The sockets systemd passed (sd_listen_fds(3)), when ``LISTEN_PID`` is this process; the
    variables are then removed, so no child takes them for its own. [] otherwise."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        count = 0
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)  # as sd_listen_fds does: FD_CLOEXEC
        sockets.append(socket.socket(fileno=fd))
    return sockets


def adopt_fd(fd: int) -> Listener:
    """An inherited descriptor as the listener: it must be a listening stream socket (family
    and address are read from it)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise OSError(exc.errno, f"fd://{fd}: {exc.strerror}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ValueError(f"fd://{fd} is not a listening stream socket")
    sock.setblocking(True)
    return Listener(sock, describe(sock))


def bind_unix(path: str, backlog: int, mode: int | None = None) -> Listener:
    """A listening unix socket at ``path`` (its mode set to ``mode`` before it listens). A stale
    socket file (nobody accepts on it) is replaced; a live one, or any other file, is refused."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            if _accepting(path):
                raise OSError(98, f"cannot listen on unix:{path}: another server accepts there")
            os.unlink(path)  # stale: left by a server that was killed
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        st = os.stat(path)
        if mode is not None:
            os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on unix:{path}: {exc.strerror}") from None
    return Listener(sock, BindAddress("unix", path=path), path, (st.st_dev, st.st_ino))


def _accepting(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


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


def describe(sock: socket.socket) -> BindAddress:
    """What ``sock`` is bound to."""
    if sock.family == socket.AF_UNIX:
        return BindAddress("unix", path=sock.getsockname() or "(unnamed)")
    host, port = address_of(sock)
    return BindAddress("tcp", host=host, port=port)


def address_of(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return host, port
