"""RM_agreement: MAE, Pearson, Spearman, Kendall and winner agreement of two reviewers, with intervals, per metric
and at system level; on the published reviews and on hand-made ones."""

import copy
import csv
import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mmrole.common.metrics import METRIC_NAMES
from mmrole.eval.agreement import ALL_METRICS, agreement_table, paired_samples, system_agreement
from mmrole.eval.stats import IntervalSettings

from tests.support.scripts import load_script

RM_agreement = load_script("eval/RM_agreement.py")


def _by_metric(rows):
    return {row.metric: row for row in rows}


def test_reviews_agree_perfectly_with_themselves(mmrole_reference):
    folder = mmrole_reference / "in-test_reviews" / "mmrole-agent"
    paired, problems = paired_samples(folder, folder)
    assert problems == []
    rows = _by_metric(agreement_table(_samples(paired)))
    for metric in METRIC_NAMES:
        assert rows[metric].pairs == 216
        assert rows[metric].mae == 0.0
        assert rows[metric].winner_agreement == 1.0
        assert rows[metric].pearson == pytest.approx(1.0)
        assert rows[metric].spearman == pytest.approx(1.0) and rows[metric].kendall == pytest.approx(1.0)
    assert rows[ALL_METRICS].pairs == 216 * 8


def _samples(paired):
    return [s for samples in paired.values() for s in samples]


def _table(a, b, settings=None):
    return _by_metric(agreement_table(_samples(paired_samples(a, b)[0]), settings))


def _write(path, samples):
    path.write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    return path


def test_perturbed_copy_gives_the_hand_computed_figures(mmrole_reference, tmp_path):
    """Copy B raises every score of the evaluated answer below 10 by one point."""
    original = json.loads((mmrole_reference / "in-test_reviews" / "qwen-vl-chat" / "comment_test.json").read_text())
    perturbed = copy.deepcopy(original)
    for sample in perturbed:
        for review in sample["rm_review"].values():
            if review["score"][0] < 10:
                review["score"][0] += 1
    a, b = _write(tmp_path / "a.json", original), _write(tmp_path / "b.json", perturbed)
    rows = _table(a, b)
    for metric in METRIC_NAMES:
        scores = [s["rm_review"][metric]["score"] for s in original]
        # |A/B - (A+1)/B| = 1/B where A < 10; the winner changes exactly where A = B - 1 or A = B.
        mae = sum(1 / gt for ev, gt in scores if ev < 10) / len(scores)
        same = sum(not (ev < 10 and ev in (gt - 1, gt)) for ev, gt in scores) / len(scores)
        assert rows[metric].pairs == 72
        assert rows[metric].mae == pytest.approx(mae, abs=1e-12)
        assert rows[metric].winner_agreement == pytest.approx(same, abs=1e-12)
        assert 0 < rows[metric].pearson < 1


def test_small_case_by_hand(mmrole_reference, tmp_path, capsys):
    base = json.loads((mmrole_reference / "in-test_reviews" / "mmrole-agent" / "comment_test.json").read_text())[:4]
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    for sample_a, sample_b, pa, pb in zip(a, b, [(8, 8), (6, 8), (9, 8), (5, 5)], [(8, 8), (8, 8), (7, 8), (5, 5)]):
        for metric in METRIC_NAMES:
            sample_a["rm_review"][metric]["score"] = list(pa)
            sample_b["rm_review"][metric]["score"] = list(pb)
    b[3]["rm_review"]["Fluency"]["score"] = {}  # unscored on one side: not paired, listed
    del b[2]  # missing on one side: not paired, listed
    fa, fb = _write(tmp_path / "a.json", a), _write(tmp_path / "b.json", b)
    out = tmp_path / "agreement.csv"
    assert RM_agreement.main(["--reviews_a", str(fa), "--reviews_b", str(fb), "--output_file", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"sample {base[2]['id']}: sample missing" in captured.err
    assert f"sample {base[3]['id']} [Fluency]" in captured.err
    rows = {r["metric"]: r for r in csv.DictReader(out.open())}
    # Pairs left: (8,8)/(8,8), (6,8)/(8,8), (5,5)/(5,5): ratios 1, .75, 1 vs 1, 1, 1.
    ia = rows["Instruction Adherence"]
    assert int(ia["pairs"]) == 3
    assert float(ia["mae"]) == pytest.approx(0.25 / 3)
    assert float(ia["winner_agreement"]) == pytest.approx(2 / 3)
    assert math.isnan(float(ia["pearson"]))  # B's ratios are constant
    assert int(rows["Fluency"]["pairs"]) == 2


def test_pearson_by_hand(mmrole_reference, tmp_path):
    base = json.loads((mmrole_reference / "in-test_reviews" / "mmrole-agent" / "comment_test.json").read_text())[:3]
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    for sample_a, sample_b, pa, pb in zip(a, b, [(8, 8), (6, 8), (9, 8)], [(8, 8), (8, 8), (7, 8)]):
        for metric in METRIC_NAMES:
            sample_a["rm_review"][metric]["score"] = list(pa)
            sample_b["rm_review"][metric]["score"] = list(pb)
    rows = _table(_write(tmp_path / "a.json", a), _write(tmp_path / "b.json", b))
    # ratios (1, .75, 1.125) vs (1, 1, .875): r = -sqrt(4/7); MAE (0 + .25 + .25) / 3; winners (0,-1,1) vs (0,0,-1).
    assert rows["Tone Consistency"].pearson == pytest.approx(-math.sqrt(4 / 7))
    assert rows["Tone Consistency"].mae == pytest.approx(1 / 6)
    assert rows["Tone Consistency"].winner_agreement == pytest.approx(1 / 3)
    # Ranks (2, 1, 3) vs (2.5, 2.5, 1): Spearman -1.5 / sqrt(2 * 1.5); Kendall tau-b: 0 concordant, 2 discordant,
    # one pair tied in B only: -2 / sqrt(3 * 2).
    assert rows["Tone Consistency"].spearman == pytest.approx(-1.5 / math.sqrt(3))
    assert rows["Tone Consistency"].kendall == pytest.approx(-2 / math.sqrt(6))


def _continuous_reviews(tmp_path, n=200, seed=0):
    """n samples whose evaluated scores under A and B are correlated normals (ground truth 5 on both sides)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(5, 1, size=n)
    records_a, records_b = [], []
    for i in range(n):
        base = {"id": f"s{i}", "conversations": [{"from": "user", "value": "q"}, {"from": "gpt", "value": "t",
                                                                                  "answer": "a"}]}
        for records, noise in ((records_a, rng.normal(0, 0.8)), (records_b, rng.normal(0, 0.8))):
            score = float(np.clip(shared[i] + noise, 0.5, 9.5))
            records.append({**base, "rm_review": {m: {"review": "r", "score": [score, 5.0]} for m in METRIC_NAMES}})
    return _write(tmp_path / "a.json", records_a), _write(tmp_path / "b.json", records_b)


def test_pearson_interval_agrees_with_fishers(tmp_path):
    """Cross-check of the bootstrap on near-normal data: the Pearson interval is close to scipy's Fisher-z one."""
    a, b = _continuous_reviews(tmp_path)
    row = _table(a, b, IntervalSettings(n_resamples=500))["Fluency"]
    ratios_a = [s["rm_review"]["Fluency"]["score"][0] / 5 for s in json.loads(a.read_text())]
    ratios_b = [s["rm_review"]["Fluency"]["score"][0] / 5 for s in json.loads(b.read_text())]
    fisher = scipy_stats.pearsonr(ratios_a, ratios_b).confidence_interval(0.95)
    assert row.pearson == pytest.approx(scipy_stats.pearsonr(ratios_a, ratios_b).statistic)
    assert row.intervals["pearson"].low == pytest.approx(fisher.low, abs=0.04)
    assert row.intervals["pearson"].high == pytest.approx(fisher.high, abs=0.04)
    for name in ("mae", "pearson", "spearman", "kendall", "winner_agreement"):
        interval = row.intervals[name]
        assert interval.low <= getattr(row, name) <= interval.high, name
    pooled = _table(a, b, IntervalSettings(n_resamples=100))[ALL_METRICS]
    # All eight metrics of a sample carry the same scores: resampling samples (not pairs) keeps them together, so
    # the pooled interval is as wide as one metric's, not sqrt(8) times narrower.
    assert pooled.intervals["pearson"].high - pooled.intervals["pearson"].low == pytest.approx(
        row.intervals["pearson"].high - row.intervals["pearson"].low, rel=0.35)


def _system_folders(tmp_path, ratios_a, ratios_b):
    """One folder per model under a/ and b/, two files of 12 samples each; model k scored ratios_x[k] * 8 / 8."""
    for side, ratios in (("a", ratios_a), ("b", ratios_b)):
        for k, ratio in enumerate(ratios):
            folder = tmp_path / side / f"m{k}"
            folder.mkdir(parents=True)
            for name in ("comment_test.json", "human-role_test.json"):
                records = [{"id": f"{name}{i}", "conversations": [{"from": "user", "value": "q"},
                                                                  {"from": "gpt", "value": "t", "answer": "a"}],
                            "rm_review": {m: {"review": "r", "score": [8 * ratio + (i % 3 - 1) * 0.1, 8.0]}
                                          for m in METRIC_NAMES}} for i in range(12)]
                (folder / name).write_text(json.dumps(records), encoding="utf-8")
    return tmp_path / "a", tmp_path / "b"


def test_system_level_correlations_of_model_scores(tmp_path, capsys):
    """Reviewer B ranks three clearly separated models the same way as A (scores shifted): every correlation is 1 in
    every resample; with B's order reversed, -1."""
    a, b = _system_folders(tmp_path, [0.5, 0.7, 0.9], [0.6, 0.75, 1.0])
    by_model = {m: paired_samples(a / m, b / m)[0] for m in ("m0", "m1", "m2")}
    rows = {r.column: r for r in system_agreement(by_model, IntervalSettings(n_resamples=300))}
    overall = rows["Overall"]
    assert overall.scores_a == pytest.approx((0.5, 0.7, 0.9)) and overall.scores_b == pytest.approx((0.6, 0.75, 1.0))
    assert overall.spearman == pytest.approx(1.0) and overall.kendall == pytest.approx(1.0)
    assert overall.intervals["kendall"] == (pytest.approx(1.0), pytest.approx(1.0))
    reversed_dir = tmp_path / "reversed"
    reversed_dir.mkdir()
    a2, b2 = _system_folders(reversed_dir, [0.5, 0.7, 0.9], [1.0, 0.75, 0.6])
    out = tmp_path / "system.csv"
    assert RM_agreement.main(["--reviews_a", str(a2), "--reviews_b", str(b2), "--models", "m0", "m1", "m2",
                              "--output_file", str(out), "--n_resamples", "200"]) == 0
    assert "System level" in capsys.readouterr().out
    rows = {r["metric"]: r for r in csv.DictReader(out.open())}
    assert float(rows["system: Overall"]["kendall"]) == pytest.approx(-1.0)
    assert float(rows["system: Overall"]["spearman_high"]) == pytest.approx(-1.0)
    assert int(rows["all metrics"]["pairs"]) == 3 * 24 * 8


@pytest.mark.parametrize("n", [5, 40, 700])
def test_batch_kendall_is_scipys_kendall_tau_b(n):
    """With ties on both sides (integer-valued scores) and a constant-free batch of vectors."""
    from mmrole.eval.agreement import batch_kendall

    rng = np.random.default_rng(n)
    xs, ys = rng.integers(0, 4, size=(6, n)).astype(float), rng.integers(0, 5, size=(6, n)).astype(float)
    expected = [scipy_stats.kendalltau(x, y).statistic for x, y in zip(xs, ys)]
    assert batch_kendall(xs, ys) == pytest.approx(expected, abs=1e-12)


def test_system_level_leaves_out_models_without_paired_samples(tmp_path):
    """A model whose reviews under one reviewer never parsed (a briefly trained reward model) has no score to rank:
    it is left out; with fewer than two models left there is no system level, and no crash."""
    a, b = _system_folders(tmp_path, [0.5, 0.7, 0.9], [0.6, 0.75, 1.0])
    by_model = {m: paired_samples(a / m, b / m)[0] for m in ("m0", "m1", "m2")}
    by_model["m1"] = {name: [] for name in by_model["m1"]}  # files, but not one sample paired
    rows = {r.column: r for r in system_agreement(by_model, IntervalSettings(n_resamples=200))}
    assert rows["Overall"].models == ("m0", "m2")
    assert rows["Overall"].scores_a == pytest.approx((0.5, 0.9))
    by_model["m2"] = {}
    assert system_agreement(by_model, IntervalSettings(n_resamples=200)) == []
