"""The only lab module that imports matplotlib (Agg: files only, no display needed).

Each ``*_figure`` function builds a figure and returns it (tests read its ticks and labels); the
function of the same name without the suffix saves it to a file and closes it.
"""
from __future__ import annotations


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path) -> None:
    """Write ``fig`` to ``path`` and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


def plain_number(value: float) -> str:
    """A tick value as people write it: ``4``, ``256``, ``10,000``, ``0.001`` (never ``4×10⁰``)."""
    import numpy as np

    if value >= 1000:
        return f"{round(value):,}"
    return np.format_float_positional(value, precision=3, fractional=False, trim="-")


def plain_log_axis(axis) -> None:
    """Label a log-scaled axis with plain numbers. matplotlib's own formatters still choose which
    ticks get a label (so minor ticks are labelled only on a short range); only the text changes."""
    from matplotlib.ticker import LogFormatterSciNotation

    class PlainLogFormatter(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            return plain_number(x) if super().__call__(x, pos) else ""

    # the same choice of labelled ticks as matplotlib's LogScale defaults
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def bars_figure(names, values, *, ylabel, title, labels=None, log=False):
    """One bar per name; ``labels`` are written above the bars (in the axis's unit)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(names)), 4.5))  # room for two-line labels
    drawn = ax.bar(names, values, color="tab:blue")
    if labels:
        ax.bar_label(drawn, labels=labels, padding=2)
    if log:
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=20)
    return fig


def bars(path, names, values, **options):
    """:func:`bars_figure`, saved to ``path``."""
    save(bars_figure(names, values, **options), path)


def timeline(path, spans, *, ylabel, title):
    """``spans``: (lane, start, end, label) tuples, drawn as horizontal bars, one lane per row."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for lane, start, end, label in spans:
        ax.barh(lane, end - start, left=start, height=0.8, edgecolor="black")
        ax.text((start + end) / 2, lane, label, ha="center", va="center", fontsize=7)
    lanes = sorted({s[0] for s in spans})
    ax.set_yticks(lanes)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def strips(path, groups, *, xlabel, title):
    """``groups``: {name: [values]}, one row of dots per name (a strip plot)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, (name, values) in enumerate(groups.items()):
        ax.plot(values, [k] * len(values), "|", markersize=20)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels(list(groups))
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def graph(path, edges, *, title):
    """A lock graph: ``edges`` are (from, to, label); nodes on a circle, arrows between them."""
    import math

    plt = _pyplot()
    nodes = sorted({e[0] for e in edges} | {e[1] for e in edges})
    where = {n: (math.cos(2 * math.pi * k / max(1, len(nodes))), math.sin(2 * math.pi * k / max(1, len(nodes))))
             for k, n in enumerate(nodes)}
    fig, ax = plt.subplots(figsize=(6, 6))
    for a, b, label in edges:
        (x1, y1), (x2, y2) = where[a], where[b]
        ax.annotate("", xy=(x2, y2), xytext=(x1, y1),
                    arrowprops=dict(arrowstyle="->", connectionstyle="arc3,rad=0.2", shrinkA=25, shrinkB=25))
        # label beside the curved arrow, on its own side
        ax.text((x1 + x2) / 2 + 0.25 * (y2 - y1), (y1 + y2) / 2 - 0.25 * (x2 - x1), label,
                ha="center", fontsize=8)
    for n, (x, y) in where.items():
        ax.text(x, y, n, ha="center", va="center", bbox=dict(boxstyle="circle", fc="lightyellow"))
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.6, 1.6)
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
