"""The line protocol, sans-IO: bytes in, request lines and error replies out.

Nothing in this package touches a socket, a thread, a clock or a logger (see h11), so every engine
shares one framing and the parser can be tested by feeding it every possible split of a stream.
"""
from .framing import DEFAULT_MAX_LINE, LineFramer, LineTooLong, error_reply

__all__ = ["DEFAULT_MAX_LINE", "LineFramer", "LineTooLong", "error_reply"]
