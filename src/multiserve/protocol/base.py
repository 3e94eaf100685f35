"""The interface every protocol offers the :class:`~multiserve.session.Session` (and so, through
it, every engine). Sans-IO, as h11 is: no socket, thread, clock or logger in here or in any
protocol module, so a protocol is tested by feeding it bytes and an engine never learns which
protocol it carries.

The life of one connection, as the session drives it::

    requests = protocol.receive_data(data)   # zero or more complete requests, in order; an
                                             # Interim among them is the protocol's own reply
                                             # (HTTP's 100 Continue), sent in its place in order
    protocol.error                           # a ProtocolError once the client broke the protocol:
                                             # answer the requests returned so far, send its
                                             # ``reply``, close
    protocol.pending                         # bytes of a request begun but not complete (the
                                             # request timeout runs while this is non-zero)
    wire = protocol.send(response)           # a service's response -> bytes, or an iterable of
                                             # byte pieces written in order (a streamed reply)
    protocol.keep_alive                      # False once the connection must close after the
                                             # replies already sent (HTTP's Connection: close)
    protocol.status()                        # the three above in one call, after every receive:
                                             # SETTLED, PENDING, FAILED or CLOSE
    protocol.settled                         # a plain attribute, kept by receive_data: True when
                                             # status() would say SETTLED (the hot path reads it
                                             # instead of calling status(): a call is ~600
                                             # instructions of the ~8,000 a request costs)
    requests = protocol.receive_eof()        # the client finished sending: a last request, if any
    protocol.error_reply(reason)             # what to send before closing for a server-side
                                             # reason ("service error", "idle timeout",
                                             # "request timeout"), or None to close silently

For ``--access-log`` only (never on the hot path): ``access_log`` says whether the protocol's
lines are per connection (the session counts them) or per request, and then
``access_entry(request, response)`` gives one request's fields.
"""
from __future__ import annotations

import dataclasses

# Protocol.status(): nothing to do / a request begun (its timeout runs) / the client broke the
# protocol (send error.reply, close) / not keep-alive (close once the replies are written)
SETTLED, PENDING, FAILED, CLOSE = range(4)


@dataclasses.dataclass(frozen=True)
class ProtocolError:
    """The client broke the protocol: ``reply`` goes out, then the connection closes.
    ``reason`` is the one log line's text."""

    reply: bytes
    reason: str


@dataclasses.dataclass(frozen=True)
class Interim:
    """Bytes the protocol itself sends at this point of the reply order, without the service:
    HTTP's ``100 Continue`` once a request's headers are in and before its body is. It comes
    out of ``receive_data`` among the requests; the session answers it with ``wire``, without
    calling the service or counting a request."""

    __slots__ = ("wire",)
    wire: bytes


class Protocol:
    """Base of every protocol. One instance per connection; not thread-safe (a connection is
    served by one thread at a time)."""

    name = "?"
    __slots__ = ()
    settled = False  # a protocol that does not keep it makes every engine call status()
    #: True when ``send`` returns a ``bytes`` response unchanged: the session then skips the call.
    passes_bytes = False
    #: ``--access-log``: a line per "connection", or per "request" (see ``access_entry``).
    access_log = "connection"

    def receive_data(self, data: bytes) -> list:
        raise NotImplementedError

    def receive_eof(self) -> list:
        raise NotImplementedError

    @property
    def error(self) -> ProtocolError | None:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        raise NotImplementedError

    @property
    def keep_alive(self) -> bool:
        return True

    def status(self) -> int:
        """``error``, ``keep_alive`` and ``pending`` in one call (the hot path of every engine);
        a protocol may override it with a faster equivalent."""
        if self.error is not None:
            return FAILED
        if not self.keep_alive:
            return CLOSE
        return PENDING if self.pending else SETTLED

    def send(self, response):
        raise NotImplementedError

    def error_reply(self, reason: str) -> bytes | None:
        raise NotImplementedError

    def access_entry(self, request, response) -> tuple:
        """A per-request protocol's access-log fields for ``request`` answered by ``response``
        (None: the "service error" reply; ``request`` None too: the refusal in ``error``):
        ``(method, target, version, status, body length or None)``, method None when there was
        no request line. Called after ``send``/``error_reply`` for that request."""
        raise NotImplementedError
