"""The report's figures: requests/s and p99 latency against connections, one pair per service.

:func:`figure_data` decides everything a figure shows (series, their points, markers and
offsets, the tick labels, or the message that replaces an empty plot) as plain data, so tests
check what is drawn without reading pixels; :func:`plot_service` only draws it. The only module
of multiserve.compare that imports matplotlib (Agg backend: no display needed).
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
# Two values within this fraction of each other draw on top of each other at this figure's
# size (7 x 4.2 in, 100 dpi: a marker is ~1.5% of the axis height): such points are nudged apart
# along x and drawn with different markers, so no series hides another.
NEAR = 0.03
# The x nudge between two near-equal points, as a factor on the (log) connection axis: 6% of a
# decade is half a marker's width apart.
NUDGE = 10 ** 0.06
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h")
EMPTY = "no successful cells"


def _near_groups(points: list[tuple[str, float]]) -> list[list[str]]:
    """Names whose values chain within NEAR of each other, sorted by value."""
    groups: list[list[tuple[str, float]]] = []
    for name, y in sorted(points, key=lambda p: p[1]):
        if groups and abs(y - groups[-1][-1][1]) <= NEAR * max(abs(y), abs(groups[-1][-1][1]), 1e-9):
            groups[-1].append((name, y))
        else:
            groups.append([(name, y)])
    return [[name for name, _ in g] for g in groups]


def plain_number(value: float) -> str:
    """A tick label for a log axis: 1, 16, 256, 1,000, 0.5, never 4×10⁰."""
    if value >= 1 or value == 0:
        return f"{value:,.0f}"
    return f"{value:g}"


def figure_data(cells: list[dict], service: str, field: str) -> dict:
    """What the ``field`` figure of ``service`` shows: ``{"series": [{"label", "baseline",
    "marker", "points": [(x, y)], "x_factors": [factor]}], "xticks": [...], "xticklabels": [...],
    "message": None or EMPTY}``. Failed cells are left out (the tables name them); a series
    whose cells all failed is left out; with none left, ``message`` says so instead of an empty
    plot and an empty legend."""
    counts = analysis.connection_counts(cells, service)
    servers = list(dict.fromkeys((c["engine"], c["baseline"]) for c in cells if c["service"] == service))
    series = []
    for i, (engine, is_baseline) in enumerate(servers):
        points = sorted((c["connections"], c[field]) for c in cells
                        if c["service"] == service and c["engine"] == engine and analysis.ok(c)
                        and c.get(field) is not None)
        if points:
            series.append({"label": engine + (" (baseline)" if is_baseline else ""), "baseline": is_baseline,
                           "color_index": i, "marker": MARKERS[i % len(MARKERS)], "points": points,
                           "x_factors": [1.0] * len(points)})
    # Nudge near-equal points of one connection count apart, centred on the true x.
    for x in counts:
        at = [(s["label"], y) for s in series for px, y in s["points"] if px == x]
        for group in _near_groups(at):
            for k, label in enumerate(group):
                s = next(s for s in series if s["label"] == label)
                j = [px for px, _ in s["points"]].index(x)
                s["x_factors"][j] = NUDGE ** (k - (len(group) - 1) / 2)
    return {"series": series, "xticks": counts, "xticklabels": [plain_number(c) for c in counts],
            "message": None if series else EMPTY}


def _color(i: int):
    """Up to 20 distinguishable colours: tab20's strong shades first, then its light ones
    (matplotlib's default cycle repeats after 10, and engines plus baselines are 11)."""
    import matplotlib

    return matplotlib.colormaps["tab20"]((2 * i) % 20 + (2 * i) // 20 % 2)


def plot_service(cells: list[dict], service: str, out_dir: Path) -> list[str]:
    """Write ``<service>-rps.png`` and ``<service>-p99.png`` into ``out_dir``; return their names.

    Engines are solid lines, baselines dashed (see :func:`figure_data` for what is drawn).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    plain = FuncFormatter(lambda v, _pos: plain_number(v))
    names = []
    for field, label, suffix, log_y in FIGURES:
        data = figure_data(cells, service, field)
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        for s in data["series"]:
            xs = [x * f for (x, _), f in zip(s["points"], s["x_factors"])]
            ys = [y for _, y in s["points"]]
            ax.plot(xs, ys, marker=s["marker"], linestyle="--" if s["baseline"] else "-", color=_color(s["color_index"]),
                    linewidth=1.2 if s["baseline"] else 2.0, label=s["label"])
        if len(data["xticks"]) > 1:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(data["xticks"], data["xticklabels"])
        ax.xaxis.set_minor_formatter(NullFormatter())
        if data["message"]:
            ax.text(0.5, 0.5, data["message"], transform=ax.transAxes, ha="center", va="center", fontsize=12)
            ax.set_yticks([])
        elif log_y:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_formatter(plain)
        ax.set_xlabel("connections")
        ax.set_ylabel(label)
        ax.set_title(f"{service}: {label} vs connections")
        ax.grid(True, alpha=0.3)
        if data["series"]:
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        name = f"{slug(service)}-{suffix}.png"
        fig.savefig(out_dir / name)
        plt.close(fig)
        names.append(name)
    return names
