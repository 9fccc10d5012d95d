"""Agreement of two reviewers (e.g. the reward model vs GPT-4) on the same answers, per metric.

For each metric and each sample that both reviewers scored: the ratio evaluated / ground truth
of each reviewer, and the winner each saw (evaluated answer, tie, ground truth). Reported: the
mean absolute difference of the ratios (MAE), their Pearson correlation, and the share of samples
on which both name the same winner. Samples one reviewer did not score are counted, not paired.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..common.metrics import METRIC_NAMES, score_ratio
from ..common.problems import Problem
from ..common.store import PathLike
from .files import SchemaError, ScorePair, read_reviews

ALL_METRICS = "all metrics"  # the pooled row


@dataclass(frozen=True)
class Agreement:
    metric: str
    pairs: int  # samples scored by both reviewers
    mae: float  # mean |ratio_a - ratio_b|
    pearson: float  # nan when either side is constant
    winner_agreement: float  # share of pairs with the same winner (A wins / tie / B wins)


def winner(pair: ScorePair) -> int:
    """+1 the evaluated answer wins, 0 tie, -1 the ground truth wins."""
    return (pair[0] > pair[1]) - (pair[0] < pair[1])


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return float("nan")
    return sxy / math.sqrt(sxx * syy)


def agreement_of(metric: str, pairs: Sequence[Tuple[ScorePair, ScorePair]]) -> Agreement:
    ratios_a = [score_ratio(a) for a, _ in pairs]
    ratios_b = [score_ratio(b) for _, b in pairs]
    n = len(pairs)
    if n == 0:
        return Agreement(metric, 0, float("nan"), float("nan"), float("nan"))
    return Agreement(
        metric,
        n,
        sum(abs(x - y) for x, y in zip(ratios_a, ratios_b)) / n,
        pearson(ratios_a, ratios_b),
        sum(winner(a) == winner(b) for a, b in pairs) / n,
    )


def _review_files(path: Path) -> Dict[str, Path]:
    if path.is_file():
        return {path.name: path}
    if path.is_dir():
        return {p.name: p for p in sorted(path.glob("*.json"))}
    raise SchemaError(path, "no such file or directory")


def paired_scores(
    reviews_a: PathLike, reviews_b: PathLike, *, key_a: str = "rm_review", key_b: str = "rm_review"
) -> Tuple[Dict[str, List[Tuple[ScorePair, ScorePair]]], List[Problem]]:
    """Per metric, the (reviewer A, reviewer B) score pairs of every sample both scored.

    reviews_a / reviews_b: two reviews files, or two folders whose files are matched by name;
    samples are matched by id. Unmatched files/samples and unscored reviews become Problems.
    """
    files_a, files_b = _review_files(Path(reviews_a)), _review_files(Path(reviews_b))
    if Path(reviews_a).is_file() and Path(reviews_b).is_file():  # two files: pair them whatever their names
        files_b = {name: path for name in files_a for path in files_b.values()}
    problems: List[Problem] = []
    for name in sorted(set(files_a) ^ set(files_b)):
        where = reviews_b if name in files_a else reviews_a
        problems.append(Problem(str(where), "*", f"no file {name} to pair with"))
    pairs: Dict[str, List[Tuple[ScorePair, ScorePair]]] = {m: [] for m in METRIC_NAMES}
    for name in sorted(set(files_a) & set(files_b)):
        samples_a, problems_a = read_reviews(files_a[name], review_key=key_a)
        samples_b, problems_b = read_reviews(files_b[name], review_key=key_b)
        problems += problems_a + problems_b
        by_id_b = {s.id: s for s in samples_b}
        for sample in samples_a:
            other = by_id_b.get(sample.id)
            if other is None:
                problems.append(Problem(str(files_b[name]), sample.id, "sample missing: not paired"))
                continue
            for metric in METRIC_NAMES:
                a, b = sample.scores[metric], other.scores[metric]
                if a is not None and b is not None:
                    pairs[metric].append((a, b))
    return pairs, problems


def agreement_table(pairs: Dict[str, List[Tuple[ScorePair, ScorePair]]]) -> List[Agreement]:
    """One row per metric, then the pooled row over all metrics."""
    rows = [agreement_of(metric, pairs[metric]) for metric in METRIC_NAMES]
    rows.append(agreement_of(ALL_METRICS, [p for metric in METRIC_NAMES for p in pairs[metric]]))
    return rows


def format_agreement(rows: Sequence[Agreement]) -> str:
    lines = [f"{'metric':26s} {'pairs':>6s} {'MAE':>8s} {'Pearson':>8s} {'winner':>8s}"]
    for row in rows:
        lines.append(f"{row.metric:26s} {row.pairs:6d} {row.mae:8.4f} {row.pearson:8.4f} {row.winner_agreement:8.4f}")
    return "\n".join(lines)


def agreement_csv_text(rows: Sequence[Agreement]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["metric", "pairs", "mae", "pearson", "winner_agreement"])
    for row in rows:
        writer.writerow([row.metric, row.pairs, row.mae, row.pearson, row.winner_agreement])
    return buffer.getvalue()
