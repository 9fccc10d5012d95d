"""Agreement of two reviewers (e.g. the reward model vs GPT-4) on the same answers: per metric, and at system
level (do the two judges rank the models alike?).

Per metric, over the samples both reviewers scored (ratio evaluated / ground truth of each): the mean absolute
difference of the ratios (MAE), their Pearson, Spearman and Kendall (tau-b) correlations, and the share of
samples on which both name the same winner (evaluated answer, tie, ground truth); a pooled row over all metrics.
Samples one reviewer did not score are counted, not paired.

System level (several models reviewed by both): each model's score under each reviewer (per metric, and Overall =
the mean of the eight; a model's files weigh alike, as a split of Table 5), and the correlations of the two
reviewers' scores across the models.

Every figure has a bootstrap interval (scipy.stats.bootstrap): the samples are resampled, a sample with all of its
metrics and both reviewers' scores (paired), within each results file of each model for the system level. The
correlations come from scipy.stats (pearsonr, rankdata for Spearman, kendalltau).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

from ..common.metrics import METRIC_NAMES, score_ratio
from ..common.problems import Problem
from ..common.store import PathLike
from .files import SchemaError, ScorePair, read_reviews
from .stats import COLUMNS, Interval, IntervalSettings, cells, stratum_means

ALL_METRICS = "all metrics"  # the pooled row
FIGURES = ("mae", "pearson", "spearman", "kendall", "winner_agreement")
CORRELATIONS = ("pearson", "spearman", "kendall")
# Agreement intervals resample fewer times than Table 5's: each resample ranks and pairs up its samples.
AGREEMENT_RESAMPLES = 1999
PAIRWISE_KENDALL = 600  # samples up to which batch_kendall counts pair signs itself (memory ~ n^2 per vector)


@dataclass(frozen=True)
class Agreement:
    metric: str
    pairs: int  # samples scored by both reviewers
    mae: float  # mean |ratio_a - ratio_b|
    pearson: float  # nan when either side is constant
    winner_agreement: float  # share of pairs with the same winner (A wins / tie / B wins)
    spearman: float = math.nan
    kendall: float = math.nan
    intervals: Dict[str, Interval] = field(default_factory=dict)  # figure name -> interval


def winner(pair: ScorePair) -> int:
    """+1 the evaluated answer wins, 0 tie, -1 the ground truth wins."""
    return (pair[0] > pair[1]) - (pair[0] < pair[1])


def _correlations(xs: np.ndarray, ys: np.ndarray) -> Tuple[float, float, float]:
    """Pearson, Spearman, Kendall tau-b of two 1-D arrays (nan when either side is constant or too short)."""
    if len(xs) < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return math.nan, math.nan, math.nan
    return (float(scipy_stats.pearsonr(xs, ys).statistic), float(scipy_stats.spearmanr(xs, ys).statistic),
            float(scipy_stats.kendalltau(xs, ys).statistic))


def _batch_pearson(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pearson's r along the last axis of (..., n) arrays; nan where a side is constant."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return scipy_stats.pearsonr(xs, ys, axis=-1).statistic


def _batch_correlations(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(3, ...) Pearson, Spearman (Pearson of the mid-ranks), Kendall of (..., n) arrays, one per leading index."""
    constant = (np.ptp(xs, axis=-1) == 0) | (np.ptp(ys, axis=-1) == 0)
    safe_x = np.where(constant[..., None], np.arange(xs.shape[-1]), xs)  # placeholders, set to nan below
    safe_y = np.where(constant[..., None], np.arange(ys.shape[-1]), ys)
    pearson = _batch_pearson(safe_x, safe_y)
    spearman = _batch_pearson(scipy_stats.rankdata(safe_x, axis=-1), scipy_stats.rankdata(safe_y, axis=-1))
    kendall = batch_kendall(safe_x, safe_y).reshape(pearson.shape)
    return np.where(constant, np.nan, np.stack([pearson, spearman, kendall]))


def batch_kendall(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Kendall's tau-b along the last axis of (..., n) arrays, one per leading index: what scipy.stats.kendalltau
    gives for each (tests/eval/test_agreement.py checks it on data with ties). scipy's function takes one pair of
    vectors per call (about 0.5 ms however short), too slow for thousands of resamples; up to PAIRWISE_KENDALL
    samples the pairs' signs are counted here in one array operation, beyond it scipy is called per vector."""
    n = xs.shape[-1]
    flat_x, flat_y = xs.reshape(-1, n), ys.reshape(-1, n)
    if n > PAIRWISE_KENDALL:
        return np.array([scipy_stats.kendalltau(x, y).statistic for x, y in zip(flat_x, flat_y)])
    first, second = np.triu_indices(n, 1)  # every unordered pair once
    pairs = len(first)
    out = []
    chunk = max(1, 4_000_000 // max(pairs, 1))  # vectors per step: bounds the (chunk, pairs) sign arrays
    for start in range(0, len(flat_x), chunk):
        x, y = flat_x[start:start + chunk], flat_y[start:start + chunk]
        sx = np.sign(x[:, first] - x[:, second]).astype(np.int8)
        sy = np.sign(y[:, first] - y[:, second]).astype(np.int8)
        concordance = np.einsum("vp,vp->v", sx, sy, dtype=np.int64)
        ties_x, ties_y = (sx == 0).sum(axis=1), (sy == 0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(concordance / np.sqrt((pairs - ties_x) * (pairs - ties_y)))
    return np.concatenate(out)


def _figures(ratios_a: np.ndarray, ratios_b: np.ndarray, winners_a: np.ndarray, winners_b: np.ndarray) -> np.ndarray:
    """(5, ...) the FIGURES of paired samples along the last axis."""
    mae = np.abs(ratios_a - ratios_b).mean(axis=-1)
    same = (winners_a == winners_b).mean(axis=-1)
    return np.concatenate([mae[None], _batch_correlations(ratios_a, ratios_b), same[None]])


def agreement_of(metric: str, pairs: Sequence[Tuple[ScorePair, ScorePair]],
                 settings: Optional[IntervalSettings] = None) -> Agreement:
    """The figures of one metric (or pooled pairs); with `settings`, their bootstrap intervals over the pairs."""
    n = len(pairs)
    if n == 0:
        return Agreement(metric, 0, math.nan, math.nan, math.nan)
    ratios_a = np.array([score_ratio(a) for a, _ in pairs])
    ratios_b = np.array([score_ratio(b) for _, b in pairs])
    winners_a = np.array([winner(a) for a, _ in pairs])
    winners_b = np.array([winner(b) for _, b in pairs])
    pearson, spearman, kendall = _correlations(ratios_a, ratios_b)
    intervals = {}
    if settings is not None and n > 1:
        def statistic(positions, axis=-1):
            p = np.moveaxis(positions, axis, -1)
            return _figures(ratios_a[p], ratios_b[p], winners_a[p], winners_b[p])

        intervals = _bootstrap_intervals([np.arange(n)], statistic, settings, f"agreement {metric}", FIGURES)
    return Agreement(metric, n, float(np.abs(ratios_a - ratios_b).mean()), pearson,
                     float((winners_a == winners_b).mean()), spearman, kendall, intervals)


def _bootstrap(data, statistic, settings: IntervalSettings, key: str) -> Tuple[np.ndarray, np.ndarray]:
    """(low, high) of a vector-valued statistic of resampled sample positions (scipy.stats.bootstrap)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # nan correlations of constant resamples
        warnings.simplefilter("ignore", category=scipy_stats.DegenerateDataWarning)
        result = scipy_stats.bootstrap(data, statistic, n_resamples=settings.n_resamples, vectorized=True,
                                       confidence_level=settings.confidence, method=settings.method, batch=200,
                                       rng=settings.rng(key))
    return np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)


def _bootstrap_intervals(data, statistic, settings: IntervalSettings, key: str, names: Sequence[str]
                         ) -> Dict[str, Interval]:
    low, high = _bootstrap(data, statistic, settings, key)
    return {name: Interval(float(lo), float(hi)) for name, lo, hi in zip(names, low, high)}


# --- reading two reviewers' files ------------------------------------------------------------------

PairedSample = Tuple[str, Dict[str, Tuple[ScorePair, ScorePair]]]  # (sample id, metric -> (A's pair, B's pair))


def _review_files(path: Path) -> Dict[str, Path]:
    if path.is_file():
        return {path.name: path}
    if path.is_dir():
        return {p.name: p for p in sorted(path.glob("*.json"))}
    raise SchemaError(path, "no such file or directory")


def paired_samples(reviews_a: PathLike, reviews_b: PathLike, *, key_a: str = "rm_review", key_b: str = "rm_review"
                   ) -> Tuple[Dict[str, List[PairedSample]], List[Problem]]:
    """Per file name, the samples both reviewers scored (on at least one metric), with each metric's two pairs.

    reviews_a / reviews_b: two reviews files, or two folders whose files are matched by name; samples are matched
    by id. Unmatched files/samples and unscored reviews become Problems."""
    files_a, files_b = _review_files(Path(reviews_a)), _review_files(Path(reviews_b))
    if Path(reviews_a).is_file() and Path(reviews_b).is_file():  # two files: pair them whatever their names
        files_b = {name: path for name in files_a for path in files_b.values()}
    problems: List[Problem] = []
    for name in sorted(set(files_a) ^ set(files_b)):
        where = reviews_b if name in files_a else reviews_a
        problems.append(Problem(str(where), "*", f"no file {name} to pair with"))
    paired: Dict[str, List[PairedSample]] = {}
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
            both = {m: (sample.scores[m], other.scores[m]) for m in METRIC_NAMES
                    if sample.scores[m] is not None and other.scores[m] is not None}
            if both:
                paired.setdefault(name, []).append((sample.id, both))
    return paired, problems


def paired_scores(reviews_a: PathLike, reviews_b: PathLike, *, key_a: str = "rm_review", key_b: str = "rm_review"
                  ) -> Tuple[Dict[str, List[Tuple[ScorePair, ScorePair]]], List[Problem]]:
    """Per metric, the (reviewer A, reviewer B) score pairs of every sample both scored (see paired_samples)."""
    paired, problems = paired_samples(reviews_a, reviews_b, key_a=key_a, key_b=key_b)
    return _pairs_by_metric([s for samples in paired.values() for s in samples]), problems


def _pairs_by_metric(samples: Sequence[PairedSample]) -> Dict[str, List[Tuple[ScorePair, ScorePair]]]:
    return {m: [pairs[m] for _, pairs in samples if m in pairs] for m in METRIC_NAMES}


def _pooled(samples: Sequence[PairedSample], settings: Optional[IntervalSettings]) -> Agreement:
    """All metrics' pairs together. Its intervals resample samples (a sample brings its eight pairs: they are not
    independent), so they need every sample scored on all eight metrics by both; else the row has none."""
    pairs = [p for _, by_metric in samples for p in by_metric.values()]
    row = agreement_of(ALL_METRICS, pairs)
    if settings is None or len(samples) < 2 or any(len(by_metric) < len(METRIC_NAMES) for _, by_metric in samples):
        return row
    grid = [[by_metric[m] for m in METRIC_NAMES] for _, by_metric in samples]  # samples x metrics x (A, B)
    ratios_a = np.array([[score_ratio(a) for a, _ in row_pairs] for row_pairs in grid])
    ratios_b = np.array([[score_ratio(b) for _, b in row_pairs] for row_pairs in grid])
    winners_a = np.array([[winner(a) for a, _ in row_pairs] for row_pairs in grid])
    winners_b = np.array([[winner(b) for _, b in row_pairs] for row_pairs in grid])

    def statistic(positions, axis=-1):
        p = np.moveaxis(positions, axis, -1)
        flat = p.shape + (len(METRIC_NAMES),)
        return _figures(*(v[p].reshape(*flat[:-2], -1) for v in (ratios_a, ratios_b, winners_a, winners_b)))

    intervals = _bootstrap_intervals([np.arange(len(samples))], statistic, settings, "agreement pooled", FIGURES)
    return Agreement(row.metric, row.pairs, row.mae, row.pearson, row.winner_agreement, row.spearman, row.kendall,
                     intervals)


def agreement_table(samples: Sequence[PairedSample], settings: Optional[IntervalSettings] = None
                    ) -> List[Agreement]:
    """One row per metric, then the pooled row over all metrics; with `settings`, every figure's interval."""
    pairs = _pairs_by_metric(samples)
    rows = [agreement_of(metric, pairs[metric], settings) for metric in METRIC_NAMES]
    return rows + [_pooled(samples, settings)]


# --- system level ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemAgreement:
    """Do two reviewers rank the models alike? One column (a metric or Overall) over the models."""

    column: str
    models: Tuple[str, ...]
    scores_a: Tuple[float, ...]  # each model's score under reviewer A (same order as models)
    scores_b: Tuple[float, ...]
    pearson: float
    spearman: float
    kendall: float
    intervals: Dict[str, Interval] = field(default_factory=dict)  # correlation name -> interval


def _model_strata(paired: Mapping[str, Sequence[PairedSample]]) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Per file, (samples x 8) ratio arrays of reviewer A and of B (nan where the metric is not paired)."""
    a, b = [], []
    for samples in paired.values():
        a.append(np.array([[score_ratio(pairs[m][0]) if m in pairs else np.nan for m in METRIC_NAMES]
                           for _, pairs in samples]))
        b.append(np.array([[score_ratio(pairs[m][1]) if m in pairs else np.nan for m in METRIC_NAMES]
                           for _, pairs in samples]))
    return a, b


def system_agreement(paired_by_model: Mapping[str, Mapping[str, Sequence[PairedSample]]],
                     settings: Optional[IntervalSettings] = None) -> List[SystemAgreement]:
    """paired_by_model: model -> paired_samples(...) of its reviews under A and B. Each model's score is the plain
    mean of its files' means (on the paired samples), Overall the mean of the eight metrics; the correlations run
    across the models. Intervals resample the samples within each file of each model, both reviewers together.
    A model (or a file) without any paired sample has no score to compare and is left out; with fewer than two
    models left there is no system level ([])."""
    paired_by_model = {model: {name: samples for name, samples in paired.items() if samples}
                       for model, paired in paired_by_model.items()}
    paired_by_model = {model: paired for model, paired in paired_by_model.items() if paired}
    if len(paired_by_model) < 2:
        return []
    models = tuple(paired_by_model)
    strata_a, strata_b, owner = [], [], []
    for index, model in enumerate(models):
        a, b = _model_strata(paired_by_model[model])
        strata_a += a
        strata_b += b
        owner += [index] * len(a)
    weights = np.zeros((len(models), len(owner)))
    for k, index in enumerate(owner):
        weights[index, k] = 1.0 / owner.count(index)

    def scores(positions):  # -> (2, models, 9, ...): both reviewers' cells of each model
        return np.stack([cells([stratum_means(v, p) for v, p in zip(strata, positions)], weights)
                         for strata in (strata_a, strata_b)])

    point = scores([np.arange(len(v)) for v in strata_a])  # (2, models, 9)
    rows = []
    for c, column in enumerate(COLUMNS):
        xs, ys = point[0, :, c], point[1, :, c]
        rows.append(SystemAgreement(column, models, tuple(map(float, xs)), tuple(map(float, ys)),
                                    *_correlations(xs, ys)))
    if settings is None or len(models) < 2:
        return rows

    def statistic(*positions, axis=-1):
        both = scores([np.moveaxis(p, axis, -1) for p in positions])  # (2, models, 9, resamples)
        per_column = np.moveaxis(both, 1, -1)  # (2, 9, resamples, models)
        return _batch_correlations(per_column[0], per_column[1])  # (3, 9, resamples)

    data = [np.arange(len(v)) for v in strata_a]
    if all(len(d) == 1 for d in data):
        return rows
    low, high = _bootstrap(data, statistic, settings, "system agreement")  # (3, 9) each
    return [replace(row, intervals={name: Interval(float(low[k, c]), float(high[k, c]))
                                    for k, name in enumerate(CORRELATIONS)}) for c, row in enumerate(rows)]


# --- as text --------------------------------------------------------------------------------------


def _with_interval(value: float, interval: Optional[Interval], spec: str = ".3f") -> str:
    text = "nan" if math.isnan(value) else format(value, spec)
    if interval is None:
        return text
    ends = ["nan" if math.isnan(v) else format(v, spec) for v in interval]
    return f"{text} [{ends[0]}, {ends[1]}]"


def format_agreement(rows: Sequence[Agreement]) -> str:
    """The per-metric table as Markdown: each figure with its interval when computed."""
    lines = ["| metric | pairs | MAE | Pearson | Spearman | Kendall | same winner |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        cells = [_with_interval(getattr(row, name), row.intervals.get(name)) for name in FIGURES]
        lines.append(f"| {row.metric} | {row.pairs} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_system_agreement(rows: Sequence[SystemAgreement]) -> str:
    """Each model's score under both reviewers, then the correlations across the models per column."""
    if not rows:
        return ""
    models = rows[0].models
    lines = ["| column | " + " | ".join(f"{m} (A / B)" for m in models) + " | Pearson | Spearman | Kendall |",
             "|---|" + "---:|" * (len(models) + 3)]
    for row in rows:
        scores = [f"{a:.3f} / {b:.3f}" for a, b in zip(row.scores_a, row.scores_b)]
        correlations = [_with_interval(getattr(row, name), row.intervals.get(name)) for name in CORRELATIONS]
        lines.append(f"| {row.column} | " + " | ".join(scores + correlations) + " |")
    return "\n".join(lines)


def agreement_csv_text(rows: Sequence[Agreement], system: Sequence[SystemAgreement] = ()) -> str:
    """One row per metric (and the pooled row): every figure with `<figure>_low`, `<figure>_high`; then, with
    several models, one `system: <column>` row per column (the correlations across the models)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["metric", "pairs"] + [f"{name}{end}" for name in FIGURES for end in ("", "_low", "_high")]
    writer.writerow(header)

    def figures(row, names):
        out = []
        for name in FIGURES:
            interval = row.intervals.get(name) if name in names else None
            value = getattr(row, name) if name in names else ""
            out += [value] + (list(interval) if interval else ["", ""])
        return out

    for row in rows:
        writer.writerow([row.metric, row.pairs] + figures(row, FIGURES))
    for row in system:
        writer.writerow([f"system: {row.column}", len(row.models)] + figures(row, CORRELATIONS))
    return buffer.getvalue()
