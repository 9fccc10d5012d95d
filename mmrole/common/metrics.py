"""MMRole-Eval metrics: names, abbreviations, dimensions, score parsing and ratio aggregation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Metric:
    name: str  # as in the reviews and result CSVs
    abbr: str  # as in Table 5
    dimension: str


METRICS: Tuple[Metric, ...] = (
    Metric("Instruction Adherence", "IA", "Fundamental conversational skills"),
    Metric("Fluency", "Flu", "Fundamental conversational skills"),
    Metric("Coherency", "Coh", "Fundamental conversational skills"),
    Metric("Image-Text Relevance", "ITR", "Multimodal understanding"),
    Metric("Response Accuracy", "RA", "Multimodal understanding"),
    Metric("Personality Consistency", "PC", "Role-playing qualities"),
    Metric("Knowledge Consistency", "KC", "Role-playing qualities"),
    Metric("Tone Consistency", "TC", "Role-playing qualities"),
)
METRIC_NAMES: Tuple[str, ...] = tuple(m.name for m in METRICS)
METRIC_ABBRS: Tuple[str, ...] = tuple(m.abbr for m in METRICS)
ABBR_OF: Dict[str, str] = {m.name: m.abbr for m in METRICS}
DIMENSIONS: Dict[str, Tuple[str, ...]] = {}
for _m in METRICS:
    DIMENSIONS.setdefault(_m.dimension, ())
    DIMENSIONS[_m.dimension] += (_m.name,)

SCORE_MARKER = "[Scores]:"
# The judge prompt asks for scores from 1 to 10; the published reviews also hold 16 scores of 0 (given to
# evaluated answers, and counted in the published results), so 0 is accepted and anything outside 0..10
# (a negative score, 85 for 8.5) is not a score.
SCORE_RANGE = (0.0, 10.0)


class ScorePair(tuple):
    """(score of the evaluated answer, score of the ground truth). Equal to the `[A, B]` lists that
    review files store, as well as to tuples, so parsed and stored scores compare directly."""

    def __new__(cls, evaluated: float, ground_truth: float):
        return super().__new__(cls, (evaluated, ground_truth))

    def __eq__(self, other):
        if isinstance(other, list):
            other = tuple(other)
        return tuple.__eq__(self, other)

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = tuple.__hash__


def parse_score_pair(review: str) -> Optional[ScorePair]:
    """The (evaluated, ground truth) scores of a judge review, parsed as the original did, or None.

    `[Scores]:` must occur exactly once; the first line after it (surrounding whitespace
    stripped), without parentheses, must split on `,` into exactly two parts; a part holding `:`
    keeps what follows its first colon; both parts must be floats.
    """
    if not isinstance(review, str):
        return None
    pieces = review.split(SCORE_MARKER)
    if len(pieces) != 2:
        return None
    line = pieces[1].strip().split("\n")[0].strip().replace("(", "").replace(")", "")
    parts = line.split(",")
    if len(parts) != 2:
        return None
    scores = []
    for part in parts:
        if ":" in part:
            part = part.split(":")[1]
        try:
            scores.append(float(part.strip()))
        except ValueError:
            return None
    return ScorePair(scores[0], scores[1])


def score_pair_problem(pair: Sequence[float]) -> Optional[str]:
    """Why a parsed (evaluated, ground truth) pair cannot be scored, or None: a score outside SCORE_RANGE."""
    low, high = SCORE_RANGE
    outside = [value for value in pair if not low <= value <= high]
    if outside:
        return f"score {outside[0]:g} outside {low:g}..{high:g}"
    return None


def score_ratio(pair: Sequence[float]) -> Optional[float]:
    """A / B for one review; None when B is 0 (no ratio can be formed)."""
    a, b = pair
    return None if b == 0 else a / b


def mean_ratios(reviews: Iterable[Mapping[str, Sequence[float]]]) -> Tuple[int, Dict[str, float]]:
    """Aggregate per-sample score pairs (metric name -> (A, B)) as RM_result does.

    Returns (count, {metric: mean ratio}). Sums run in sample order so the floats equal the
    published CSVs bit for bit. A metric missing from a sample (a failed review) leaves that
    sample out of that metric's mean only; `count` is the number of samples given.
    """
    sums = {name: 0.0 for name in METRIC_NAMES}
    counts = {name: 0 for name in METRIC_NAMES}
    count = 0
    for sample in reviews:
        count += 1
        for name in METRIC_NAMES:
            pair = sample.get(name)
            if pair is None or len(pair) != 2:
                continue
            ratio = score_ratio(pair)
            if ratio is None:
                continue
            sums[name] += ratio
            counts[name] += 1
    return count, {name: (sums[name] / counts[name] if counts[name] else float("nan")) for name in METRIC_NAMES}


def overall(scores: Mapping[str, float]) -> float:
    """The overall score: the mean of the eight metrics."""
    return sum(scores[name] for name in METRIC_NAMES) / len(METRIC_NAMES)


def weighted_mean(rows: List[Tuple[int, Mapping[str, float]]]) -> Dict[str, float]:
    """Per-metric mean over several files, each weighted by its sample count (Table 5 rows)."""
    total = sum(count for count, _ in rows)
    return {name: sum(count * scores[name] for count, scores in rows) / total for name in METRIC_NAMES}
