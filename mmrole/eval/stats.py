"""The statistics behind MMRole-Eval's uncertainty figures: stratified bootstrap intervals for Table 5 cells
and paired tests, on per-sample ratios (mmrole.eval.sample_scores gives them; report.py and compare.py use this).

The unit is a sample. A sample holds one ratio per metric (evaluated / ground-truth score; nan when that metric
has no valid score), and a Table 5 cell is a weighted sum of per-file means: `cell[m] = sum_k w[k] *
mean(ratios_k[:, m])` over the files (strata) k, the weights saying how files and splits combine (the paper: each
split the plain mean of its three files, In-Test 3 : Out-Test 1), and Overall the mean of the eight metric cells.
Resampling draws samples with replacement within each file, never across files (the file sizes and weights are
fixed by the design), and a drawn sample brings all eight of its ratios, so that metrics of one sample stay
together and Overall's interval sees their correlation.

Why scipy.stats.bootstrap and not a hand-written resampler: it resamples each of several samples independently
(`paired=False`), which is exactly resampling within strata, and it already implements the percentile, basic and
BCa intervals (BCa with a jackknife per stratum) and the bootstrap standard error. What it cannot take directly is
a sample that is a vector (eight ratios): its observations are scalars. So the observations handed to it are the
*positions* of the samples in their file, and the statistic looks the ratio rows up; one call returns every
cell of every row of a model at once (a vector-valued statistic: scipy treats its leading axes as a batch), all
from the same resamples. tests/eval/test_stats.py checks that a vector call equals the scalar calls of its cells,
the intervals against a closed form, and against the normal approximation.

Seeds: every call gets its own generator from (seed, a key such as the model name), so a model's interval does not
change when another model is added to the table, and the same seed gives the same numbers.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

from ..common.metrics import METRIC_NAMES

OVERALL = "Overall"
COLUMNS: Tuple[str, ...] = (*METRIC_NAMES, OVERALL)  # the cells of a Table 5 row
METHODS = ("percentile", "basic", "BCa")  # scipy.stats.bootstrap's interval methods
TIE_TOLERANCE = 1e-12  # per-sample differences closer to 0 than this are ties (sums of ratios carry float noise)
# Resamples per vectorised call: scipy's default (all at once) allocates resamples x samples x metrics floats in one
# piece, several times slower than batches of this size (measured on the published files).
BATCH = 1000


class Interval(NamedTuple):
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class IntervalSettings:
    """How intervals and tests are computed. 9999 resamples put the Monte-Carlo error of a 95% percentile bound
    near 0.1 of the interval's standard error, and a permutation p-value can go down to 1e-4."""

    confidence: float = 0.95
    n_resamples: int = 9999
    method: str = "percentile"
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie between 0 and 1, not {self.confidence}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.n_resamples < 1:
            raise ValueError("n_resamples must be at least 1")

    def rng(self, key: str) -> np.random.Generator:
        """The generator of one computation: the same (seed, key) always gives the same numbers."""
        return np.random.default_rng([self.seed, zlib.crc32(key.encode("utf-8"))])


def stratum_means(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Per-metric mean over the samples at `positions` (shape (..., n)) of a (samples x metrics) array: (..., metrics).
    A metric without any score among them is nan."""
    # How often each sample was drawn, per resample: (resamples, samples); then sums and counts are two matrix
    # products, much faster than gathering a (resamples, n, metrics) copy. einsum, not `@`: these products are
    # small, and BLAS threads on a busy machine made `@` ten times slower (measured).
    n = len(values)
    lead = positions.shape[:-1]
    flat = positions.reshape(-1, positions.shape[-1])
    offsets = flat + n * np.arange(len(flat))[:, None]
    draws = np.bincount(offsets.ravel(), minlength=len(flat) * n).reshape(len(flat), n).astype(float)
    present = ~np.isnan(values)
    sums = np.einsum("rn,nm->rm", draws, np.where(present, values, 0.0))
    counts = np.einsum("rn,nm->rm", draws, present.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means.reshape(*lead, values.shape[1])


def cells(means: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Table 5 cells from per-stratum metric means. means: K arrays (..., 8); weights: (rows, K), each row
    weighing the strata it uses (0 = not used: a nan there does not spread). Returns (rows, 9, ...): the eight
    metric cells and Overall (their mean) of each row."""
    stacked = np.stack(means)  # (K, ..., 8)
    weights = np.asarray(weights, dtype=float)
    rows = []
    for row in weights:
        used = np.flatnonzero(row)
        metric_cells = np.einsum("k,k...->...", row[used], stacked[used])  # (..., 8)
        with_overall = np.concatenate([metric_cells, metric_cells.mean(axis=-1, keepdims=True)], axis=-1)
        rows.append(np.moveaxis(with_overall, -1, 0))  # (9, ...)
    return np.stack(rows)


def point_cells(values: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """The cells of every row (rows x 9) from all samples (no resampling)."""
    return cells([stratum_means(v, np.arange(len(v))) for v in values], weights)


@dataclass(frozen=True)
class BootstrapCells:
    estimate: np.ndarray  # (rows, 9): the cells from all samples
    low: np.ndarray  # (rows, 9)
    high: np.ndarray
    standard_error: np.ndarray

    def intervals(self, row: int) -> Dict[str, Interval]:
        return {column: Interval(float(self.low[row, c]), float(self.high[row, c])) for c, column in enumerate(COLUMNS)}


def bootstrap_cells(values: Sequence[np.ndarray], weights: np.ndarray, settings: IntervalSettings,
                    key: str) -> BootstrapCells:
    """Intervals for every cell of every row, resampling samples within each stratum.

    values: K arrays (n_k samples x 8 metrics, nan = no score); weights: (rows, K) as in `cells`.
    """
    values = [np.asarray(v, dtype=float) for v in values]
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    if any(len(v) == 0 for v in values):
        raise ValueError("every stratum needs at least one sample")

    # A stratum of one sample resamples to itself: it is held fixed (scipy refuses a sample of one observation).
    resampled = [k for k, v in enumerate(values) if len(v) > 1]

    def statistic(*positions, axis=-1):
        # positions: one integer array per resampled stratum, (..., n_k) with the resamples on the leading axes
        moved = [np.moveaxis(p, axis, -1) for p in positions]
        fixed = np.zeros(moved[0].shape[:-1] + (1,), dtype=int)
        by_stratum = dict(zip(resampled, moved))
        return cells([stratum_means(v, by_stratum.get(k, fixed)) for k, v in enumerate(values)], weights)

    estimate = point_cells(values, weights)
    data = [np.arange(len(values[k])) for k in resampled]
    if not resampled:  # nothing to resample
        return BootstrapCells(estimate, estimate.copy(), estimate.copy(), np.zeros_like(estimate))
    with warnings.catch_warnings():
        # BCa warns about (and returns nan for) a distribution without spread; handled below. Means of resamples
        # that happen to miss every score of a metric are nan (counted by scipy as such); nothing else warns.
        warnings.simplefilter("ignore", category=scipy_stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        result = scipy_stats.bootstrap(data, statistic, n_resamples=settings.n_resamples, vectorized=True,
                                       confidence_level=settings.confidence, method=settings.method,
                                       batch=BATCH, rng=settings.rng(key))
    low, high = np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)
    # A cell that does not vary under resampling (every sample scored alike) has the interval [value, value];
    # BCa cannot compute one there and says nan.
    flat = np.nanmax(result.bootstrap_distribution, axis=-1) == np.nanmin(result.bootstrap_distribution, axis=-1)
    low, high = np.where(flat & np.isnan(low), estimate, low), np.where(flat & np.isnan(high), estimate, high)
    return BootstrapCells(estimate, low, high, np.asarray(result.standard_error))


# --- paired differences ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedColumn:
    """Two models compared on one column (a metric or Overall) over the samples both have."""

    column: str
    pairs: int  # samples with a score of this column from both models
    difference: float  # A - B, aggregated as Table 5 (weights of the shared strata)
    interval: Interval  # bootstrap interval of the difference (same resamples for both models: paired)
    wins: int  # samples where A's ratio (Overall: the mean of its per-metric differences) is higher
    ties: int
    losses: int
    p_permutation: float  # two-sided, signs of the per-sample differences flipped at random
    p_sign: float  # two-sided sign test on wins vs losses (ties dropped)


def sample_differences(differences: np.ndarray) -> np.ndarray:
    """Per sample (rows of a samples x 8 array of A - B ratio differences, nan = not both scored), its 8
    differences and the mean of those present (its Overall difference): (samples, 9)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # a sample without any shared metric: nan
        overall = np.nanmean(differences, axis=1, keepdims=True)
    return np.concatenate([differences, overall], axis=1)


def _permutation_contributions(differences: Sequence[np.ndarray], stratum_weights: np.ndarray) -> np.ndarray:
    """Each sample's share of the aggregated difference, per column: (9, samples over all strata). Their sum is the
    aggregated difference, and flipping the sign of a sample's differences flips its shares, so a sign-flip
    permutation test of the sum is the paired test of the Table 5 difference."""
    shares = []
    for d, weight in zip(differences, stratum_weights):
        present = ~np.isnan(d)
        counts = np.maximum(present.sum(axis=0), 1)  # samples with this metric in the stratum
        per_metric = np.where(present, d, 0.0) * weight / counts  # (n, 8)
        shares.append(np.concatenate([per_metric, per_metric.mean(axis=1, keepdims=True)], axis=1))
    return np.concatenate(shares).T


def paired_columns(differences: Sequence[np.ndarray], stratum_weights: np.ndarray, settings: IntervalSettings,
                   key: str) -> List[PairedColumn]:
    """Compare two models on the samples both have. differences: per stratum, a (samples x 8) array of A - B
    ratios (nan where either model has no score), rows aligned by sample id; stratum_weights: (K,) as Table 5
    weighs those strata. Returns one PairedColumn per column of COLUMNS."""
    differences = [np.asarray(d, dtype=float) for d in differences]
    boot = bootstrap_cells(differences, stratum_weights[None, :], settings, key)
    per_sample = sample_differences(np.concatenate(differences))  # (samples, 9)
    shares = _permutation_contributions(differences, np.asarray(stratum_weights, dtype=float)).T  # (samples, 9)

    def flipped_sum(signed_positions, axis=-1):
        # The observations are the positions 1..n, so that scipy's sign flips (a one-sample `samples` test flips
        # the sign of each observation) act on whole samples, all nine columns at once; 4x faster than flipping
        # a (9, n) array, which scipy does observation by observation. Returns (..., 9): the resamples first.
        signs = np.sign(np.moveaxis(signed_positions, axis, -1))
        return np.einsum("...n,nc->...c", signs, shares)

    p_permutation = np.full(len(COLUMNS), np.nan)  # one shared sample: no test (scipy needs two observations)
    if len(shares) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            p_permutation = np.atleast_1d(scipy_stats.permutation_test(
                (np.arange(1, len(shares) + 1),), flipped_sum, permutation_type="samples", vectorized=True,
                n_resamples=settings.n_resamples, alternative="two-sided", batch=BATCH,
                rng=settings.rng(key + "/permutation")).pvalue)
    columns = []
    for c, column in enumerate(COLUMNS):
        d = per_sample[:, c]
        d = d[~np.isnan(d)]
        wins, losses = int((d > TIE_TOLERANCE).sum()), int((d < -TIE_TOLERANCE).sum())
        ties = len(d) - wins - losses
        p_sign = scipy_stats.binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
        columns.append(PairedColumn(column, len(d), float(boot.estimate[0, c]),
                                    Interval(float(boot.low[0, c]), float(boot.high[0, c])), wins, ties, losses,
                                    float(p_permutation[c]), float(p_sign)))
    return columns