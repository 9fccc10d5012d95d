"""Charts of Table 5: a radar over the eight metrics (the paper's Figure 3) and per-dimension bars.

Every score is a ratio to the ground truth (1.0 = judged as good as the reference answer), so both
charts are drawn around 1.0: the radar marks it with a dashed black circle and says where its
radius starts; the bars grow up or down from 1.0, so a bar's length is the distance from the
ground truth (a bar chart cut at 0.7 would make 0.8 look like a third of 1.0). Each function
writes its PNG atomically and returns the matplotlib Figure, whose lines and bars hold the plotted
values (tests read them back).

Rows that carry intervals (`row.intervals`, mmrole.eval.report) get them drawn: a whisker per bar in the
dimension chart, and a thick translucent radial segment in the model's colour on each metric's axis of the radar
(two models' segments meet only where their intervals overlap).
"""

from __future__ import annotations

import io
import math
from typing import List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..common.metrics import ABBR_OF, DIMENSIONS, METRIC_NAMES  # noqa: E402
from ..common.store import PathLike, atomic_write_bytes

GROUND_TRUTH_LABEL = "ground truth (1.0)"
OVERALL = "Overall"


def _values(rows: Sequence, names: Sequence[str]) -> List[float]:
    return [row.scores[name] if name != OVERALL else row.overall for row in rows for name in names]


def _intervals(row, names: Sequence[str]) -> List[Tuple[float, float]]:
    """(low, high) per name, or [] when the row has no intervals."""
    intervals = getattr(row, "intervals", None) or {}
    return [tuple(intervals[name]) for name in names] if all(name in intervals for name in names) else []


def _interval_bounds(rows: Sequence, names: Sequence[str]) -> List[float]:
    return [bound for row in rows for interval in _intervals(row, names) for bound in interval]


def _any_intervals(rows: Sequence) -> bool:
    return any(_intervals(row, METRIC_NAMES) for row in rows)


def _value_range(values: Sequence[float], step: float = 0.05) -> Tuple[float, float]:
    """Bounds on a `step` grid around the values and 1.0 (the ground truth is always shown)."""
    finite = [v for v in values if not math.isnan(v)] + [1.0]
    return math.floor((min(finite) - step / 2) / step) * step, math.ceil((max(finite) + step / 2) / step) * step


def _colors(n: int) -> List:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig: Figure, path: PathLike) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    plt.close(fig)  # the Figure object stays readable for the caller


def radar_chart(rows: Sequence, path: PathLike,
                title: str = "MMRole-Eval: each model's score relative to the ground truth") -> Figure:
    """One closed line per row (model) over the eight metrics, first metric on top, clockwise;
    a dashed black line marks 1.0. No fills: six overlapping fills turn grey and hide the lines."""
    count = len(METRIC_NAMES)
    angles = [2 * math.pi * i / count for i in range(count)]
    low, high = _value_range(_values(rows, METRIC_NAMES) + _interval_bounds(rows, METRIC_NAMES))
    fig, ax = plt.subplots(figsize=(8.5, 8.8), subplot_kw={"projection": "polar"})
    ax.set_theta_offset(math.pi / 2)
    ax.set_theta_direction(-1)
    closed = angles + angles[:1]
    for row, color in zip(rows, _colors(len(rows))):
        values = _values([row], METRIC_NAMES)
        ax.plot(closed, values + values[:1], color=color, linewidth=1.8, marker="o", markersize=3.5,
                label=row.label, zorder=3)
    for row, color in zip(rows, _colors(len(rows))):
        # On the metric's own axis: two models' segments meet only where their intervals overlap, which is the
        # point of drawing them.
        for angle, (lower, upper) in zip(angles, _intervals(row, METRIC_NAMES)):
            ax.plot([angle, angle], [lower, upper], color=color, linewidth=5, alpha=0.45, solid_capstyle="butt",
                    label="_interval", zorder=2)
    ax.plot(closed, [1.0] * len(closed), color="black", linestyle=(0, (4, 3)), linewidth=1.1,
            label=GROUND_TRUTH_LABEL, zorder=4)
    ax.set_ylim(low, high)
    # Ticks strictly inside the range on the 0.1 grid (low itself may sit on the 0.05 grid), or on the 0.05 grid
    # when the range is too narrow for two of them.
    per_unit = 10 if high - low >= 0.3 else 20
    first = math.floor(low * per_unit + 1e-9) + 1
    ticks = [round(k / per_unit, 2) for k in range(first, math.ceil(high * per_unit - 1e-9))]
    tick_format = ".1f" if per_unit == 10 else ".2f"
    ax.set_yticks(ticks)
    ax.set_yticklabels([])
    # Radial labels drawn as text above the lines, on white, halfway between two metric axes: the
    # axis' own tick labels sit below the data and every polygon crosses them.
    for tick in ticks:
        ax.text(math.pi / count, tick, format(tick, tick_format), fontsize=7, color="0.2", ha="center", va="center", zorder=6,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9, "pad": 0.8})
    ax.set_xticks(angles)
    ax.set_xticklabels([f"{name}\n({ABBR_OF[name]})" for name in METRIC_NAMES], fontsize=8.5)
    for label, angle in zip(ax.get_xticklabels(), angles):
        # Anchor each metric name on its side of the circle so it never runs into the outer ring.
        x, y = math.sin(angle), math.cos(angle)  # screen direction (first metric up, clockwise)
        label.set_horizontalalignment("left" if x > 0.3 else "right" if x < -0.3 else "center")
        label.set_verticalalignment("bottom" if y > 0.3 else "top" if y < -0.3 else "center")
    ax.tick_params(axis="x", pad=6)
    ax.spines["polar"].set_color("0.6")
    fig.suptitle(title, fontsize=12, y=0.99)
    ax.set_title(f"radius starts at {low:.2f}, not 0, so differences look larger; "
                 "outside the dashed line = judged better than the ground truth", fontsize=8, color="0.3", pad=52)
    if _any_intervals(rows):  # a legend entry for the segments (a grey proxy: each model's are in its colour)
        ax.plot([], [], color="0.5", linewidth=5, alpha=0.45, solid_capstyle="butt", label="bootstrap interval")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(len(rows) + 1, 4), fontsize=8, frameon=False)
    _save(fig, path)
    return fig


def dimension_bar_chart(rows: Sequence, path: PathLike,
                        title: str = "MMRole-Eval by dimension: difference from the ground truth") -> Figure:
    """One panel per dimension plus Overall; in each, a group of bars per metric (one per model).
    Bars start at 1.0 (the ground truth): up = judged better, down = worse."""
    groups = [(dimension, [(name, ABBR_OF[name]) for name in metrics]) for dimension, metrics in DIMENSIONS.items()]
    groups.append((OVERALL, [(OVERALL, "mean of 8")]))
    columns = [*METRIC_NAMES, OVERALL]
    low, high = _value_range(_values(rows, columns) + _interval_bounds(rows, columns))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(METRIC_NAMES) / 2 + 3, 4.8), sharey=True,
                             gridspec_kw={"width_ratios": [len(metrics) for _, metrics in groups]})
    colors = _colors(len(rows))
    width = 0.8 / max(len(rows), 1)
    for ax, (group, metrics) in zip(axes, groups):
        for i, (row, color) in enumerate(zip(rows, colors)):
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(metrics))]
            values = _values([row], [name for name, _ in metrics])
            ax.bar(xs, [v - 1.0 for v in values], bottom=1.0, width=width, color=color, label=row.label)
            ax.plot(xs, values, linestyle="none", marker="o", markersize=2.5, color=color, zorder=4)  # visible at ~1.0
            intervals = _intervals(row, [name for name, _ in metrics])
            if intervals:
                ax.vlines(xs, [lo for lo, _ in intervals], [hi for _, hi in intervals], color="0.15", linewidth=1.0,
                          zorder=5)
                ax.hlines([v for pair in intervals for v in pair], [x - width / 5 for x in xs for _ in (0, 1)],
                          [x + width / 5 for x in xs for _ in (0, 1)], color="0.15", linewidth=1.0, zorder=5)
        ax.axhline(1.0, color="black", linewidth=1.0, zorder=3)
        ax.set_xticks(range(len(metrics)))
        ax.set_xticklabels([abbr for _, abbr in metrics])
        ax.set_title(group, fontsize=10)
        ax.set_ylim(low, high)
        ax.grid(axis="y", color="0.9", zorder=0)
        ax.set_axisbelow(True)
    axes[0].set_ylabel("score relative to the ground truth\n(bars start at 1.0 = as good as it"
                       + ("; whiskers: intervals)" if _any_intervals(rows) else ")"))
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.04, 1.0), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    _save(fig, path)
    return fig
