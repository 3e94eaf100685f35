"""What to run: :class:`LoadSpec`, and the request/reply bytes it implies.

Every request carries a fixed-width counter (``hello world 0042\\n``) so that a reply to the wrong
request (out of order, duplicated, another connection's) is caught, not only a malformed one. The
requests form a ring of ``ring`` distinct lines; a worker precomputes the ring and its expected
replies once, so checking a reply costs one ``bytes.startswith`` against the precomputed stream.
With ``expect="any"`` nothing is checked, so the message is sent exactly as given (a command for a
service that parses it), without a counter.
"""
from __future__ import annotations

import dataclasses
import os

EXPECTS = ("upper", "echo", "any")


@dataclasses.dataclass
class LoadSpec:
    """One load run. ``duration`` or ``requests`` bounds it (``requests`` wins when both are set).

    ``rate`` (requests/s over all connections) switches to open loop; ``pipeline`` is the number of
    requests a connection keeps in flight (closed loop) or may have in flight (open loop).
    ``processes=None`` means one worker per core this process may run on. ``size`` (bytes per
    request line, newline included) overrides ``message``. ``reply_timeout``: see the field.
    """

    host: str = "127.0.0.1"
    port: int = 0
    connections: int = 16
    duration: float | None = 5.0
    requests: int | None = None
    rate: float | None = None
    pipeline: int = 1
    processes: int | None = None
    message: bytes = b"hello world"
    size: int | None = None
    expect: str = "upper"
    warmup: float = 0.0
    # Prime: every connection sends one request and gets its reply before the green light (as
    # the C reference client does), so accepting, forking or spawning a thread per connection
    # happens before the clock starts and a slow acceptor shows in ``LoadResult.prime`` instead
    # of leaking into throughput. A primed reply is checked as any other.
    prime: bool = False
    connect_timeout: float = 5.0
    # With ``requests`` (no duration), a run in which no reply arrives for this long ends,
    # counting the connections still waiting as "timeout" errors, so a server that accepts and
    # never answers cannot hang the tool. 10 s: far above any latency of a healthy server here.
    reply_timeout: float = 10.0
    # Seconds per bucket of the timeline (``multiserve bench``: 1 s; ``multiserve drill``: 0.1 s,
    # fine enough to see a reload's few hundred milliseconds).
    timeline_interval: float = 1.0
    # The first bucket ends this many seconds after the window starts (0: one interval), the next
    # ones an interval apart: the drill puts bucket ends half a bucket away from its event times.
    timeline_phase: float = 0.0
    # HTTP/1.1 load (:class:`multiserve.loadgen.http.HttpRequest`): every connection sends this
    # request over keep-alive and checks each response's status (and body, if it says which);
    # ``message``, ``size`` and ``expect`` are then unused. None: the line protocol.
    http: object = None

    def __post_init__(self):
        if isinstance(self.message, str):  # a convenience for callers; the wire carries bytes
            self.message = self.message.encode("utf-8")

    def validate(self) -> "LoadSpec":
        """Raises ValueError with a one-line reason for the first bad field; returns self."""
        checks = [
            (1 <= self.port <= 65535, "port must be 1..65535"),
            (self.connections >= 1, "connections must be >= 1"),
            (self.requests is not None or (self.duration is not None and self.duration > 0), "duration must be > 0"),
            (self.requests is None or self.requests >= 1, "requests must be >= 1"),
            (self.rate is None or self.rate > 0, "rate must be > 0"),
            (self.pipeline >= 1, "pipeline must be >= 1"),
            (self.processes is None or self.processes >= 1, "processes must be >= 1"),
            (self.expect in EXPECTS, f"expect must be one of {', '.join(EXPECTS)}"),
            (self.warmup >= 0, "warmup must be >= 0"),
            (self.connect_timeout > 0, "connect timeout must be > 0"),
            (self.reply_timeout > 0, "reply timeout must be > 0"),
            (self.timeline_interval >= 0.01, "timeline interval must be >= 0.01 s"),
            (0 <= self.timeline_phase <= self.timeline_interval, "timeline phase must be 0..interval"),
            (b"\n" not in bytes(self.message), "message must not contain a newline"),
            (self.size is None or self.size >= min_size(self), f"size must be >= {min_size(self)} bytes"),
        ]
        for ok, reason in checks:
            if not ok:
                raise ValueError(reason)
        if self.http is not None:
            self.http.validate()
        return self

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    def worker_count(self) -> int:
        """The number of worker processes: never more than connections."""
        wanted = self.processes or len(os.sched_getaffinity(0))
        return max(1, min(wanted, self.connections))


def ring_size(pipeline: int) -> int:
    """Distinct requests per ring: a power of ten (so the counter has a fixed width) of at least
    1000 and more than twice the pipeline depth, so any reordering within the requests in flight
    changes the expected bytes."""
    ring = 1000
    while ring <= 2 * pipeline:
        ring *= 10
    return ring


def min_size(spec: LoadSpec) -> int:
    counter = 0 if spec.expect == "any" else len(str(ring_size(spec.pipeline) - 1)) + 1
    return counter + 2


def requests_ring(spec: LoadSpec) -> list[bytes]:
    """The ring of request lines, each ending in ``\\n``, all the same length (HTTP: the one
    request every connection sends)."""
    if spec.http is not None:
        return [spec.http.wire(spec.host, spec.port)]
    message = bytes(spec.message)
    if spec.expect == "any":
        line = message if spec.size is None else (message or b"x").ljust(spec.size - 1, b"x")[: spec.size - 1]
        return [line + b"\n"]
    ring = ring_size(spec.pipeline)
    width = len(str(ring - 1))
    if spec.size is not None:
        body = spec.size - 1 - width - 1
        message = (message or b"x").ljust(body, b"x")[:body]
    return [b"%s %0*d\n" % (message, width, i) for i in range(ring)]


def expected_reply(spec: LoadSpec, request: bytes) -> bytes:
    return request.upper() if spec.expect == "upper" else request
