"""``--plot FILE``: throughput and latency over the drill's timeline, events marked, buckets with
losses flagged. matplotlib is imported here only (the drill runs without it)."""
from __future__ import annotations


def plot(data: dict, path: str) -> None:
    """Writes a PNG of ``data`` (the drill's JSON object) to ``path``. Raises RuntimeError with
    one line if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        raise RuntimeError("--plot needs matplotlib (pip install matplotlib)") from None
    timeline = data["timeline"]
    ends = [b["t_s"] for b in timeline]
    if ends:  # the last bucket was cut short by the end of the load
        ends[-1] = min(ends[-1], max(data["settings"]["duration_s"], ends[-2] if len(ends) > 1 else 0.0))
    widths = [end - start for start, end in zip([0.0, *ends], ends)]  # the first bucket is shorter
    t = [end - width / 2 for end, width in zip(ends, widths)]
    rates = [b["requests"] / width if width > 0 else 0.0 for b, width in zip(timeline, widths)]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    top.plot(t, rates, color="tab:blue", lw=1.2)
    top.set_ylabel("replies/s")
    bad = [(x, rate) for x, rate, b in zip(t, rates, timeline)
           if any(b["errors"].get(k, 0) for k in ("lost", "refused", "reset", "timeout", "unsent")) or b["mismatches"]]
    if bad:
        top.scatter(*zip(*bad), color="tab:red", marker="x", zorder=3, label="lost, refused, reset, timeout or unsent")
        top.legend(loc="lower left", fontsize=8)
    ms = [(x, b["p99_us"] / 1000, b["max_us"] / 1000) for x, b in zip(t, timeline) if b["requests"]]
    if ms:
        x, p99, peak = zip(*ms)
        bottom.plot(x, p99, color="tab:green", lw=1.2, label="p99")
        bottom.plot(x, peak, color="tab:orange", lw=0.8, alpha=0.7, label="max")
        bottom.set_yscale("log")
        bottom.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        bottom.legend(loc="upper left", fontsize=8)
    bottom.set_ylabel("latency, ms (from the intended send)")
    bottom.set_xlabel("seconds since the load started")
    for event in data["events"]:
        for ax in (top, bottom):
            ax.axvline(event["at_s"], color="gray", ls="--", lw=0.8)
        top.annotate(event["event"], (event["at_s"], 1.0), xycoords=("data", "axes fraction"),
                     rotation=90, va="top", ha="right", fontsize=8)
    attacks = ", ".join(data["settings"]["attacks"])
    fig.suptitle(f"multiserve drill: {data['target']}" + (f" under {attacks}" if attacks else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
