"""mmrole.eval.stats: bootstrap intervals of Table 5 cells and the paired test, against answers known without the
code under test (closed forms, the normal approximation, exhaustive enumeration)."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mmrole.eval.stats import COLUMNS, IntervalSettings, bootstrap_cells, paired_columns, point_cells

METRICS = 8


def _same_in_every_metric(column):
    return np.repeat(np.asarray(column, dtype=float)[:, None], METRICS, axis=1)


def test_bernoulli_percentile_interval_is_the_binomial_quantiles():
    """One stratum of 0/1 ratios: the bootstrap distribution of the mean is Binomial(n, p)/n, so the percentile
    interval's ends are its 2.5% and 97.5% quantiles (up to one step of 1/n for the Monte-Carlo draw)."""
    n, ones = 40, 12
    values = _same_in_every_metric([1.0] * ones + [0.0] * (n - ones))
    boot = bootstrap_cells([values], np.array([[1.0]]), IntervalSettings(n_resamples=20000), "bernoulli")
    low = scipy_stats.binom.ppf(0.025, n, ones / n) / n
    high = scipy_stats.binom.ppf(0.975, n, ones / n) / n
    for c in range(len(COLUMNS)):
        assert boot.estimate[0, c] == pytest.approx(ones / n)
        assert abs(boot.low[0, c] - low) <= 1 / n + 1e-12 and abs(boot.high[0, c] - high) <= 1 / n + 1e-12
    assert boot.standard_error[0, 0] == pytest.approx(math.sqrt(ones / n * (1 - ones / n) / n), rel=0.03)


def test_stratified_standard_error_is_the_closed_form_and_ignores_the_spread_between_strata():
    """The bootstrap variance of sum_k w_k mean_k with resampling inside each stratum is sum_k w_k^2 s_k^2 / n_k
    (s_k^2 with ddof=0). Strata with far apart means: resampling across them would add that spread."""
    rng = np.random.default_rng(5)
    strata = [rng.normal(0.8, 0.10, size=30), rng.normal(1.2, 0.05, size=50), rng.normal(1.0, 0.20, size=20)]
    weights = np.array([0.5, 0.25, 0.25])
    boot = bootstrap_cells([_same_in_every_metric(s) for s in strata], weights[None, :],
                           IntervalSettings(n_resamples=20000), "strata")
    expected = math.sqrt(sum(w ** 2 * np.var(s) / len(s) for w, s in zip(weights, strata)))
    assert boot.estimate[0, 0] == pytest.approx(sum(w * s.mean() for w, s in zip(weights, strata)))
    assert boot.standard_error[0, 0] == pytest.approx(expected, rel=0.03)
    assert boot.standard_error[0, -1] == pytest.approx(expected, rel=0.03)  # Overall of 8 identical metrics


@pytest.mark.parametrize("method", ["percentile", "BCa", "basic"])
def test_large_samples_give_the_normal_approximation(method):
    rng = np.random.default_rng(11)
    # Large and without skew (BCa rightly moves the interval of a skewed mean; its skew fades only as 1/sqrt(n)).
    strata = [rng.uniform(0.2, 1.4, size=2000), rng.normal(1.1, 0.3, size=1500)]
    weights = np.array([0.75, 0.25])
    boot = bootstrap_cells([_same_in_every_metric(s) for s in strata], weights[None, :],
                           IntervalSettings(n_resamples=4000, method=method), "normal")
    estimate = sum(w * s.mean() for w, s in zip(weights, strata))
    half = 1.959964 * math.sqrt(sum(w ** 2 * np.var(s, ddof=1) / len(s) for w, s in zip(weights, strata)))
    assert boot.low[0, 0] == pytest.approx(estimate - half, abs=0.06 * half)
    assert boot.high[0, 0] == pytest.approx(estimate + half, abs=0.06 * half)


def test_a_sample_keeps_its_metrics_together():
    """Metrics 1-4 are x and metrics 5-8 are 2 - x for each sample, so every sample's mean is 1: resampling whole
    samples leaves Overall at exactly 1, while each metric varies."""
    x = np.random.default_rng(2).uniform(0.5, 1.5, size=60)
    values = np.column_stack([x] * 4 + [2 - x] * 4)
    boot = bootstrap_cells([values], np.array([[1.0]]), IntervalSettings(n_resamples=2000), "together")
    assert boot.low[0, -1] == pytest.approx(1.0, abs=1e-12) and boot.high[0, -1] == pytest.approx(1.0, abs=1e-12)
    assert boot.high[0, 0] - boot.low[0, 0] > 0.1


def test_one_vector_call_equals_scipy_on_each_cell_alone():
    """All cells come from one scipy.stats.bootstrap call with a vector-valued statistic; the same draws for one
    cell with a plain scalar statistic give the same interval."""
    rng = np.random.default_rng(3)
    values = [rng.uniform(0.6, 1.3, size=(25, METRICS)), rng.uniform(0.6, 1.3, size=(30, METRICS))]
    values[0][3, 2] = np.nan  # a failed review: left out of that metric's mean only
    weights = np.array([[0.5, 0.5], [1.0, 0.0]])
    settings = IntervalSettings(n_resamples=999)
    boot = bootstrap_cells(values, weights, settings, "vector")

    def coherency_of_row_0(a, b):
        return 0.5 * np.nanmean(values[0][a, 2]) + 0.5 * np.nanmean(values[1][b, 2])

    alone = scipy_stats.bootstrap([np.arange(25), np.arange(30)], coherency_of_row_0, vectorized=False,
                                  n_resamples=999, method="percentile", rng=settings.rng("vector"))
    assert boot.low[0, 2] == pytest.approx(alone.confidence_interval.low, abs=1e-12)
    assert boot.high[0, 2] == pytest.approx(alone.confidence_interval.high, abs=1e-12)
    assert boot.estimate[1, 2] == pytest.approx(np.nanmean(values[0][:, 2]))


def test_seeded_and_reproducible():
    values = [np.random.default_rng(4).uniform(size=(30, METRICS))]
    first = bootstrap_cells(values, np.array([[1.0]]), IntervalSettings(n_resamples=500), "m")
    again = bootstrap_cells(values, np.array([[1.0]]), IntervalSettings(n_resamples=500), "m")
    other_seed = bootstrap_cells(values, np.array([[1.0]]), IntervalSettings(n_resamples=500, seed=1), "m")
    other_key = bootstrap_cells(values, np.array([[1.0]]), IntervalSettings(n_resamples=500), "another model")
    assert np.array_equal(first.low, again.low) and np.array_equal(first.high, again.high)
    assert not np.array_equal(first.low, other_seed.low) and not np.array_equal(first.low, other_key.low)


def test_identical_scores_give_a_zero_width_interval_with_every_method():
    values = [np.ones((12, METRICS))]
    for method in ("percentile", "BCa"):
        boot = bootstrap_cells(values, np.array([[1.0]]), IntervalSettings(n_resamples=200, method=method), "flat")
        assert np.all(boot.low == 1.0) and np.all(boot.high == 1.0)


def test_point_cells_weigh_strata_and_average_metrics():
    a = np.array([[1.0] * METRICS, [0.5] * METRICS])
    b = np.array([[2.0] * (METRICS - 1) + [np.nan]])
    cells = point_cells([a, b], np.array([[0.75, 0.25]]))
    assert cells[0, 0] == pytest.approx(0.75 * 0.75 + 0.25 * 2.0)
    assert math.isnan(cells[0, METRICS - 1]) and math.isnan(cells[0, -1])  # no score in a used stratum: nan


# --- the paired test ------------------------------------------------------------------------------


def test_a_constant_advantage_is_certain_and_has_the_exact_smallest_p_values():
    """A beats B by 0.1 on every metric of each of 10 samples: the difference is 0.1 with a zero-width interval,
    10 wins, and both tests give 2 / 2**10 (exact permutation test: 2**10 sign patterns <= the resamples)."""
    differences = [np.full((10, METRICS), 0.1)]
    columns = {c.column: c for c in paired_columns(differences, np.array([1.0]), IntervalSettings(), "constant")}
    overall = columns["Overall"]
    assert overall.difference == pytest.approx(0.1)
    assert overall.interval.low == pytest.approx(0.1) and overall.interval.high == pytest.approx(0.1)
    assert (overall.wins, overall.ties, overall.losses) == (10, 0, 0)
    assert overall.p_sign == pytest.approx(2 / 2 ** 10)
    assert overall.p_permutation == pytest.approx(2 / 2 ** 10)


def test_permutation_p_value_equals_exhaustive_enumeration_of_sign_flips():
    """Two strata weighted 3 : 1, one review missing: the p-value of the weighted mean difference, enumerated over
    all 2**10 sign patterns here by hand, is what paired_columns reports (scipy runs the exact test too)."""
    rng = np.random.default_rng(8)
    first, second = rng.normal(0.05, 0.1, size=(6, METRICS)), rng.normal(-0.02, 0.1, size=(4, METRICS))
    first[2, 5] = np.nan
    weights = np.array([0.75, 0.25])

    def statistic(signs, column):
        def mean(d, s):
            flipped = d * s[:, None]
            if column == "Overall":
                return np.mean([np.nanmean(flipped[:, m]) for m in range(METRICS)])
            return np.nanmean(flipped[:, COLUMNS.index(column)])
        return weights[0] * mean(first, signs[:6]) + weights[1] * mean(second, signs[6:])

    columns = {c.column: c for c in paired_columns([first, second], weights, IntervalSettings(), "enumerated")}
    for column in ("Overall", "Personality Consistency", "Fluency"):
        observed = statistic(np.ones(10), column)
        null = [statistic(np.array(signs), column) for signs in itertools.product((1.0, -1.0), repeat=10)]
        expected = np.mean([abs(v) >= abs(observed) - 1e-12 for v in null])
        assert columns[column].difference == pytest.approx(observed, abs=1e-12)
        assert columns[column].p_permutation == pytest.approx(expected, abs=1e-9), column


def test_no_difference_on_average_gives_p_one_and_balanced_wins():
    """Half the samples favour A by 0.2, the other half B by 0.2: difference 0, interval around 0, p = 1 (the sum of
    the weighted shares is 0 up to float noise, which moves a two-sided Monte-Carlo p a little below 1)."""
    differences = [np.concatenate([np.full((20, METRICS), 0.2), np.full((20, METRICS), -0.2)])]
    overall = paired_columns(differences, np.array([1.0]), IntervalSettings(), "balanced")[-1]
    assert overall.difference == pytest.approx(0.0, abs=1e-12)
    assert overall.interval.low < 0 < overall.interval.high
    assert (overall.wins, overall.ties, overall.losses) == (20, 0, 20)
    assert overall.p_sign == pytest.approx(1.0) and overall.p_permutation > 0.9


def test_ties_and_missing_scores_count_per_column():
    d = np.zeros((5, METRICS))
    d[0, 0], d[1, 0], d[2, 0] = 0.1, -0.1, np.nan
    columns = {c.column: c for c in paired_columns([d], np.array([1.0]), IntervalSettings(n_resamples=99), "ties")}
    ia = columns["Instruction Adherence"]
    assert (ia.pairs, ia.wins, ia.ties, ia.losses) == (4, 1, 2, 1)
    assert columns["Overall"].pairs == 5  # every sample has some shared metric


def test_one_shared_sample_has_a_difference_and_no_permutation_test():
    """One sample in common (a quick demo): the difference is that sample's, wins are counted, the sign test runs,
    and the permutation test (it needs two observations) gives nan instead of stopping the report."""
    differences = [np.full((1, 8), 0.25)]
    columns = {c.column: c for c in paired_columns(differences, np.array([1.0]), IntervalSettings(n_resamples=99),
                                                   "one")}
    overall = columns["Overall"]
    assert overall.difference == pytest.approx(0.25) and (overall.wins, overall.ties, overall.losses) == (1, 0, 0)
    assert math.isnan(overall.p_permutation) and overall.p_sign == pytest.approx(1.0)


def test_a_stratum_of_one_sample_is_held_fixed_while_the_others_resample():
    """One file with a single sample beside a file of several (a quick demo's test sets): the single sample is in
    every resample, so the interval is the other file's, shifted by the fixed file's share."""
    single, several = np.full((1, 8), 0.5), np.repeat(np.array([[0.0], [1.0]]), 8, axis=1).repeat(10, axis=0)
    boot = bootstrap_cells([single, several], np.array([[0.5, 0.5]]), IntervalSettings(n_resamples=999), "mixed")
    alone = bootstrap_cells([several], np.array([[1.0]]), IntervalSettings(n_resamples=999), "mixed")
    assert boot.estimate[0] == pytest.approx(0.25 + 0.5 * alone.estimate[0])
    low, high = boot.low[0, -1], boot.high[0, -1]
    assert 0.25 + 0.5 * 0.2 < low < 0.5 < high < 0.25 + 0.5 * 0.8  # it varies: only the several-sample file moves
