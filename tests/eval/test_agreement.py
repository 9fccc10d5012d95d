"""RM_agreement: MAE, Pearson and winner agreement of two reviewers, on the published reviews."""

import copy
import csv
import json
import math

import pytest

from mmrole.common.metrics import METRIC_NAMES
from mmrole.eval.agreement import ALL_METRICS, agreement_table, paired_scores

from tests.support.scripts import load_script

RM_agreement = load_script("eval/RM_agreement.py")


def _by_metric(rows):
    return {row.metric: row for row in rows}


def test_reviews_agree_perfectly_with_themselves(mmrole_reference):
    folder = mmrole_reference / "in-test_reviews" / "mmrole-agent"
    pairs, problems = paired_scores(folder, folder)
    assert problems == []
    rows = _by_metric(agreement_table(pairs))
    for metric in METRIC_NAMES:
        assert rows[metric].pairs == 216
        assert rows[metric].mae == 0.0
        assert rows[metric].winner_agreement == 1.0
        assert rows[metric].pearson == pytest.approx(1.0)
    assert rows[ALL_METRICS].pairs == 216 * 8


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
    rows = _by_metric(agreement_table(paired_scores(a, b)[0]))
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
    rows = _by_metric(agreement_table(paired_scores(_write(tmp_path / "a.json", a), _write(tmp_path / "b.json", b))[0]))
    # ratios (1, .75, 1.125) vs (1, 1, .875): r = -sqrt(4/7); MAE (0 + .25 + .25) / 3; winners (0,-1,1) vs (0,0,-1).
    assert rows["Tone Consistency"].pearson == pytest.approx(-math.sqrt(4 / 7))
    assert rows["Tone Consistency"].mae == pytest.approx(1 / 6)
    assert rows["Tone Consistency"].winner_agreement == pytest.approx(1 / 3)
