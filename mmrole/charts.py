"""Charts of Table 5: a radar over the eight metrics (the paper's Figure 3) and per-dimension bars."""

from __future__ import annotations

import math
import os
from typing import List, Sequence, Tuple, Union

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402

from .metrics import ABBR_OF, DIMENSIONS, METRIC_NAMES  # noqa: E402

PathLike = Union[str, os.PathLike]


def _value_range(rows: Sequence, pad: float = 0.03) -> Tuple[float, float]:
    values = [row.scores[name] for row in rows for name in METRIC_NAMES if not math.isnan(row.scores[name])]
    low, high = min(values + [1.0]), max(values + [1.0])  # 1.0 (= ground truth) always shown
    return math.floor((low - pad) * 20) / 20, math.ceil((high + pad) * 20) / 20


def _colors(n: int) -> List:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def radar_chart(rows: Sequence, path: PathLike, title: str = "MMRole-Eval: ratio to the ground truth") -> None:
    """One closed polygon per row (model) over the eight metrics; a dashed circle marks 1.0."""
    angles = [2 * math.pi * i / len(METRIC_NAMES) for i in range(len(METRIC_NAMES))]
    low, high = _value_range(rows)
    fig, ax = plt.subplots(figsize=(8.5, 7.5), subplot_kw={"projection": "polar"})
    ax.set_theta_offset(math.pi / 2)  # first metric at the top, clockwise like the paper
    ax.set_theta_direction(-1)
    for row, color in zip(rows, _colors(len(rows))):
        values = [row.scores[name] for name in METRIC_NAMES]
        ax.plot(angles + angles[:1], values + values[:1], color=color, linewidth=1.8, label=row.label)
        ax.fill(angles + angles[:1], values + values[:1], color=color, alpha=0.06)
    ax.plot([*angles, angles[0]], [1.0] * (len(angles) + 1), color="grey", linestyle="--", linewidth=0.9,
            label="ground truth (1.0)")
    ax.set_xticks(angles)
    ax.set_xticklabels([f"{ABBR_OF[name]}\n{name}" for name in METRIC_NAMES], fontsize=8)
    ax.tick_params(axis="x", pad=12)
    ax.set_ylim(low, high)
    ax.set_rlabel_position(360 / len(METRIC_NAMES) / 2)  # radial labels between two metric axes
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title, pad=24)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(len(rows) + 1, 4), fontsize=8, frameon=False)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def dimension_bar_chart(rows: Sequence, path: PathLike) -> None:
    """One panel per dimension; in each, grouped bars per metric (one bar per model)."""
    dimensions = list(DIMENSIONS.items())
    low, high = _value_range(rows)
    widths = [len(metrics) for _, metrics in dimensions]
    fig, axes = plt.subplots(1, len(dimensions), figsize=(4.2 * len(dimensions) + 2, 4.8),
                             gridspec_kw={"width_ratios": widths}, sharey=True)
    colors = _colors(len(rows))
    bar = 0.8 / max(len(rows), 1)
    for ax, (dimension, metrics) in zip(axes, dimensions):
        for i, (row, color) in enumerate(zip(rows, colors)):
            xs = [j + (i - (len(rows) - 1) / 2) * bar for j in range(len(metrics))]
            ax.bar(xs, [row.scores[m] for m in metrics], width=bar, color=color, label=row.label)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.9)
        ax.set_xticks(range(len(metrics)))
        ax.set_xticklabels([ABBR_OF[m] for m in metrics])
        ax.set_title(dimension, fontsize=10)
        ax.set_ylim(low, high)
    axes[0].set_ylabel("mean ratio to the ground truth")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)

