"""TLS (``--certfile``, ``--keyfile``, ``--ca-certs``, ``--cert-reqs``): the server's context, and
the handshake of the engines that serve a connection on its own thread or greenlet.

``server_context(config)`` is made once, before the server binds, so a bad certificate or key is
one error line at start. How each engine wraps its connections: the blocking ones (thread,
process, gevent) call :func:`handshake` on the connection's own thread/greenlet, bounded by
``--request-timeout``; the threadpool engine handshakes without blocking inside its epoll loop
(its sweep enforces the same deadline); the event-loop ones (asyncio, hybrid) hand the context to
``loop.connect_accepted_socket(ssl=...)``, the loop's own TLS transport (uvloop's when used). A
client that fails the handshake (plain text to a TLS port, a certificate refused, a stall) costs
one log line and its connection, nothing else.
"""
from __future__ import annotations

import errno
import select
import ssl

from .config import SettingError

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class HandshakeError(OSError):
    """A connection's TLS handshake failed; ``strerror`` is the one log line's text."""


def server_context(config) -> ssl.SSLContext | None:
    """The server's SSLContext (None without ``config.certfile``): Python's defaults for a server
    (``ssl.create_default_context(Purpose.CLIENT_AUTH)``: TLS 1.2 at least, its cipher list),
    the certificate chain, and client-certificate checking as ``cert_reqs`` asks. Raises
    SettingError naming the file that cannot be used."""
    if not config.certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.certfile, config.keyfile)
    except (ssl.SSLError, OSError) as exc:
        which = "--certfile/--keyfile" if config.keyfile else "--certfile"
        raise SettingError(f"{which}: cannot load the certificate and key: {_reason(exc)}") from None
    if config.ca_certs:
        try:
            context.load_verify_locations(cafile=config.ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise SettingError(f"ca_certs (--ca-certs): cannot load {config.ca_certs}: {_reason(exc)}") from None
    context.verify_mode = CERT_REQS[config.cert_reqs]
    return context


def handshake(sock, context: ssl.SSLContext, timeout: float):
    """Wrap an accepted, blocking ``sock`` in TLS and complete the handshake within ``timeout``
    seconds; returns the TLS socket (``sock`` itself is detached: close the returned one).
    Raises HandshakeError (closing the connection) with the line to log."""
    tls_sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    try:
        tls_sock.settimeout(timeout)
        tls_sock.do_handshake()
    except (OSError, ValueError) as exc:
        tls_sock.close()
        raise handshake_failed(exc, timeout) from None
    return tls_sock


def handshake_failed(exc: BaseException, timeout: float) -> HandshakeError:
    if isinstance(exc, TimeoutError) or "timed out" in str(exc) or "taking longer" in str(exc):
        reason = f"no handshake within {timeout:g}s (--request-timeout)"
    else:
        reason = _reason(exc)
    return HandshakeError(errno.EPROTO, f"TLS handshake failed: {reason}")


def _reason(exc: BaseException) -> str:
    """An ssl error's words without the C source location: "[SSL: HTTP_REQUEST] http request"."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.split(" (_ssl.c:")[0]


def send_all(sock, timeout: float, data: bytes) -> None:
    """``sendall`` on a non-blocking SSL socket (the threadpool engine's): waits for room while
    the client is slow, up to ``timeout`` seconds each time no byte could be sent (then
    TimeoutError, as a kernel send timeout would end it). A retried write passes the same bytes,
    as OpenSSL requires after a want-write."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
            continue
        except ssl.SSLWantWriteError:
            events = select.POLLOUT
        except ssl.SSLWantReadError:  # a TLS 1.3 key update: the peer's bytes first
            events = select.POLLIN
        poller = select.poll()
        poller.register(sock.fileno(), events)
        if not poller.poll(timeout * 1000):
            raise TimeoutError(f"send made no progress for {timeout:g}s (client not reading)")
