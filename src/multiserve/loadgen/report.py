"""What people see: the live progress line and the final table (rich)."""
from __future__ import annotations

from collections import deque

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .result import LoadResult


class LiveLine:
    """One line, redrawn in place: elapsed time and requests/s over the last second.

    ``update(elapsed, total_requests)``; ``update(None, None)`` ends the display."""

    WINDOW = 1.0  # seconds of samples the current rate is computed over

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.live = Live(Text("connecting..."), console=self.console, refresh_per_second=4, transient=True)
        self.live.start()
        self.samples: deque[tuple[float, int]] = deque()

    def update(self, elapsed, total) -> None:
        if elapsed is None:
            self.live.stop()
            return
        samples = self.samples
        samples.append((elapsed, total))
        while len(samples) > 2 and elapsed - samples[1][0] >= self.WINDOW:
            samples.popleft()
        (t0, n0) = samples[0]
        rate = (total - n0) / (elapsed - t0) if elapsed > t0 else 0.0
        self.live.update(Text(f"{max(elapsed, 0.0):6.1f} s   {total:>12,d} replies   {rate:>12,.0f} req/s"))


def _lat_cells(lat: dict | None) -> list[str]:
    if not lat:
        return ["-"] * 5
    return [f"{lat[k]:,}" for k in ("p50", "p90", "p99", "p999", "max")]


def render(result: LoadResult) -> Table:
    """The final table: throughput, latency percentiles (both views in open loop), errors."""
    spec = result.spec
    mode = f"open loop, {spec.rate:,.0f} req/s target" if spec.open_loop else "closed loop"
    table = Table(title=f"multiserve bench {result.target}  ({mode})", show_header=True)
    table.add_column("")
    for name in ("p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"):
        table.add_column(name, justify="right")
    label = "latency (corrected)" if spec.open_loop else "latency"
    table.add_row(label, *_lat_cells(result.latency_us))
    if spec.open_loop:
        table.add_row("latency (uncorrected)", *_lat_cells(result.latency_uncorrected_us))
    table.caption = summary_line(result)
    return table


def summary_line(result: LoadResult) -> str:
    spec = result.spec
    parts = [
        f"{result.requests:,} replies in {result.duration_s:.2f} s = {result.rps:,.0f} req/s",
        f"{spec.connections} conns x pipeline {spec.pipeline}, {result.processes} processes ({result.loop})",
        f"connect {result.connect['connected']} ok in {result.connect['time_s'] * 1000:.0f} ms",
        "errors " + (", ".join(f"{k}={v}" for k, v in sorted(result.errors.items())) or "none"),
        f"mismatches {result.mismatches}",
    ]
    return "\n".join(parts)


def print_result(result: LoadResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(render(result))
    for got, expected in result.mismatch_examples:
        console.print(f"mismatch: got {got!r} expected {expected!r}" if expected else f"unexpected reply {got!r}", markup=False)
