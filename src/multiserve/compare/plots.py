"""The report's figures: requests/s and p99 latency against connections, one pair per service.

The only module of multiserve.compare that imports matplotlib (with the Agg backend: no display
needed, and importing it costs nothing to the rest of the package).
"""
from __future__ import annotations

from pathlib import Path

from . import analysis
from .report import slug

# (y field, y label, file suffix, log scale): latency spans 10 µs to seconds, so p99 is log-scaled.
FIGURES = (
    ("rps", "requests/s", "rps", False),
    ("p99_us", "p99 latency (µs)", "p99", True),
)


def _color(i: int):
    """Up to 20 distinguishable colours: tab20's strong shades first, then its light ones
    (matplotlib's default cycle repeats after 10, and engines plus baselines are 11)."""
    import matplotlib

    return matplotlib.colormaps["tab20"]((2 * i) % 20 + (2 * i) // 20 % 2)


def plot_service(cells: list[dict], service: str, out_dir: Path) -> list[str]:
    """Write ``<service>-rps.png`` and ``<service>-p99.png`` into ``out_dir``; return their names.

    Engines are solid lines, baselines dashed; failed cells are left out of the lines (the
    tables name them).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = analysis.connection_counts(cells, service)
    servers = list(dict.fromkeys((c["engine"], c["baseline"]) for c in cells if c["service"] == service))
    names = []
    for field, label, suffix, log_y in FIGURES:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        for i, (engine, is_baseline) in enumerate(servers):
            points = sorted((c["connections"], c[field]) for c in cells
                            if c["service"] == service and c["engine"] == engine and analysis.ok(c)
                            and c[field] is not None)
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", linestyle="--" if is_baseline else "-", color=_color(i),
                    linewidth=1.2 if is_baseline else 2.0, label=engine + (" (baseline)" if is_baseline else ""))
        if len(counts) > 1:
            ax.set_xscale("log")
        ax.set_xticks(counts, [str(c) for c in counts])
        if log_y:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("connections")
        ax.set_ylabel(label)
        ax.set_title(f"{service}: {label} vs connections")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        name = f"{slug(service)}-{suffix}.png"
        fig.savefig(out_dir / name)
        plt.close(fig)
        names.append(name)
    return names
