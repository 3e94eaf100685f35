"""The clock behind HTTP's ``Date`` header, kept out of the sans-IO protocol (which is handed
``http_date``): RFC 9110 5.6.7's IMF-fixdate, formatted once per second, not per response."""
from __future__ import annotations

import email.utils
import time

_cache = (0, b"")  # (second, its formatted date): one tuple, replaced whole, so threads never see half


def http_date() -> bytes:
    """The current time as ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    global _cache
    now = int(time.time())
    cache = _cache
    if cache[0] != now:
        cache = _cache = (now, email.utils.formatdate(now, usegmt=True).encode("ascii"))
    return cache[1]
