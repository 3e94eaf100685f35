"""Protocols, sans-IO: bytes in, requests out; responses in, bytes out.

Nothing in this package touches a socket, a thread, a clock or a logger (see h11), so every engine
carries every protocol, and a parser is tested by feeding it every possible split of a stream.
A new protocol is a module here and a line in ``PROTOCOLS``; no engine changes.
"""
from __future__ import annotations

import importlib

from .base import Interim, Protocol, ProtocolError
from .line import DEFAULT_MAX_LINE, LineFramer, LineProtocol, LineTooLong, error_reply

# name -> "module:factory"; a factory takes the server config and returns a per-connection
# protocol constructor (so its settings are read once, not per connection)
PROTOCOLS = {
    "line": "multiserve.protocol.line:factory",
    "http": "multiserve.protocol.http:factory",
}


def protocol_factory(name: str, config):
    """``make() -> Protocol`` for the protocol registered as ``name``; ValueError names the known ones."""
    try:
        target = PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}: use one of {', '.join(PROTOCOLS)}") from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)(config)


__all__ = ["DEFAULT_MAX_LINE", "PROTOCOLS", "Interim", "LineFramer", "LineProtocol", "LineTooLong", "Protocol",
           "ProtocolError", "error_reply", "protocol_factory"]
