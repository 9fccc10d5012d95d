"""Paired comparisons and the ranking: constructed models with a known order, and the published six models."""

import csv
import json

import pytest

from mmrole.common.metrics import METRIC_NAMES
from mmrole.eval.compare import rank_models
from mmrole.eval.results import write_result_csvs

from tests.support.scripts import load_script

report = load_script("eval/report.py")


def _model(eval_dir, name, scores_of):
    """A model with one In-Test file of 30 samples; sample i scored scores_of(i) / 10 on every metric."""
    reviews = eval_dir / "in-test_reviews" / name
    reviews.mkdir(parents=True)
    records = [{"id": f"s{i}", "image": "x.jpg", "role": "R", "script": "S", "other_role": "o",
                "conversations": [{"from": "user", "value": "q"}, {"from": "assistant", "value": "t", "answer": "a"}],
                "rm_review": {m: {"review": "r", "score": [float(scores_of(i)), 10.0]} for m in METRIC_NAMES}}
               for i in range(30)]
    (reviews / "comment_test.json").write_text(json.dumps(records), encoding="utf-8")
    write_result_csvs(reviews, eval_dir / "in-test_results" / name)


def test_compare_and_rank_constructed_models(tmp_path, capsys):
    """`good` = `base` + 1 point on every sample (a certain difference of 0.1); `noisy` = `base` +-1 alternating
    (no difference): good ranks first alone, base and noisy share rank 2."""
    eval_dir = tmp_path / "eval"
    _model(eval_dir, "base", lambda i: 5 + i % 4)
    _model(eval_dir, "good", lambda i: 6 + i % 4)
    _model(eval_dir, "noisy", lambda i: 5 + i % 4 + (1 if i % 2 else -1))
    out = tmp_path / "o"
    assert report.main(["--eval_dir", str(eval_dir), "--models", "base", "good", "noisy", "--output_dir", str(out),
                        "--compare", "good", "base", "--n_resamples", "2000"]) == 0
    printed = capsys.readouterr().out
    assert "good vs base: 30 shared samples" in printed  # in the order asked for, though stored as (base, good)
    assert "| Overall | 30 | +0.1000 | [+0.1000, +0.1000] | 30 / 0 / 0 |" in printed
    with open(out / "comparisons.csv", newline="") as f:
        rows = {(r["model_a"], r["model_b"], r["column"]): r for r in csv.DictReader(f)}
    good = rows[("base", "good", "Overall")]
    assert float(good["difference"]) == pytest.approx(-0.1)
    assert float(good["low"]) == pytest.approx(-0.1) and float(good["high"]) == pytest.approx(-0.1)
    assert (good["wins"], good["ties"], good["losses"]) == ("0", "0", "30")
    assert float(good["p_permutation"]) < 0.001 and float(good["p_sign"]) == pytest.approx(2 * 0.5 ** 30)
    noisy = rows[("base", "noisy", "Overall")]
    assert float(noisy["difference"]) == pytest.approx(0.0, abs=1e-12)
    assert (noisy["wins"], noisy["losses"]) == ("15", "15") and float(noisy["p_permutation"]) > 0.5
    ranking = (out / "ranking.md").read_text()
    assert "| 1 | good |" in ranking and "| 2 | base |" in ranking and "| 2 | noisy |" in ranking
    assert (out / "compare_good_vs_base.md").read_text() in printed


def test_rank_is_one_plus_the_models_that_beat_it():
    from mmrole.eval.compare import Comparison
    from mmrole.eval.stats import Interval, PairedColumn

    def pair(a, b, low, high):
        column = PairedColumn("Overall", 10, (low + high) / 2, Interval(low, high), 0, 0, 0, 1.0, 1.0)
        return Comparison(a, b, ("in/x",), 10, {"Overall": column})

    # A beats C; B and C overlap; A and B overlap: A 1, B 1 (nobody beats it), C 2.
    ranking = rank_models({"A": 1.1, "B": 1.0, "C": 0.9},
                          [pair("A", "B", -0.01, 0.2), pair("A", "C", 0.05, 0.3), pair("B", "C", -0.1, 0.2)])
    assert [(r.rank, r.model, r.beaten_by) for r in ranking] == [(1, "A", ()), (1, "B", ()), (2, "C", ("A",))]


def test_compare_needs_two_of_the_models(mmrole_reference, tmp_path, capsys):
    args = ["--eval_dir", str(mmrole_reference), "--models", "mmrole-agent", "--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        report.main(args + ["--compare", "mmrole-agent", "yi-vl-6b"])
    assert exit_info.value.code == 2 and "--compare needs two different models of --models" in capsys.readouterr().err
