"""mmrole.eval.audit on hand-made reviews whose figures are known: parse failures, swap consistency, position bias,
length bias, and the breakdowns by dialogue type and character."""

import csv
import json
import math

import pytest
from scipy import stats as scipy_stats

from mmrole.common.metrics import METRIC_NAMES
from mmrole.eval.audit import ALL, CHARACTER, DIALOGUE_TYPE, audit_markdown, audit_models

MODEL = "judge-test"


def _record(sample_id, role, answer, truth, review=None, swapped=None):
    record = {"id": sample_id, "image": "x.jpg", "role": role, "script": "S", "other_role": "a curious human",
              "conversations": [{"from": "user", "value": "q"}, {"from": "assistant", "value": truth, "answer": answer}]}
    if review is not None:
        record["rm_review"] = review
    if swapped is not None:
        record["rm_review_swapped"] = swapped
    return record


def _reviews(pair, skip=()):
    return {m: {"review": f"... [Scores]: ({pair[0]}, {pair[1]})", "score": list(pair)} for m in METRIC_NAMES
            if m not in skip}


def _comment_file():
    """s1 (Alice, +3 characters): (9, 8) everywhere, swapped (8, 9) = the same winner. s2 (Bob, -2): (7, 8),
    swapped (7, 8) = evaluated 8 vs 7: every winner flips. s3 (Alice): Fluency unparsed, Coherency missing, (8, 8)
    else. s4 (Bob): empty answer, not reviewed."""
    s3 = _reviews((8.0, 8.0), skip=("Coherency",))
    s3["Fluency"] = {"review": "no scores here", "score": {}}
    return [_record("s1", "Alice", "abcdef", "abc", _reviews((9.0, 8.0)), _reviews((8.0, 9.0))),
            _record("s2", "Bob", "ab", "abcd", _reviews((7.0, 8.0)), _reviews((7.0, 8.0))),
            _record("s3", "Alice", "abc", "abc", s3),
            _record("s4", "Bob", "", "abc")]


def _human_role_file():
    """12 samples of Carol: the answer i characters longer than the ground truth, scored min(10, 2 + i // 2)."""
    return [_record(f"h{i}", "Carol", "x" * (10 + i), "x" * 10, _reviews((float(min(10, 2 + i // 2)), 9.0)))
            for i in range(12)]


@pytest.fixture()
def audits(tmp_path):
    folder = tmp_path / "in-test_reviews" / MODEL
    folder.mkdir(parents=True)
    (folder / "comment_test.json").write_text(json.dumps(_comment_file()), encoding="utf-8")
    (folder / "human-role_test.json").write_text(json.dumps(_human_role_file()), encoding="utf-8")
    return {(g.kind, g.group): g for g in audit_models(tmp_path, [MODEL])}


def test_parse_failures_and_missing_reviews_are_counted_per_metric(audits):
    comment = audits[(DIALOGUE_TYPE, "comment")]
    assert (comment.samples, comment.not_reviewed) == (4, 1)
    fluency, coherency = comment.metrics["Fluency"], comment.metrics["Coherency"]
    assert (fluency.reviews, fluency.failures, fluency.missing) == (3, 1, 0)
    assert (coherency.reviews, coherency.failures, coherency.missing) == (2, 0, 1)
    overall = comment.metrics["Overall"]
    assert (overall.reviews, overall.failures, overall.missing) == (23, 1, 1)
    assert overall.failure_rate == pytest.approx(1 / 23)
    everything = audits[(ALL, ALL)]
    assert everything.metrics["Overall"].reviews == 23 + 12 * 8 and everything.metrics["Overall"].failures == 1


def test_swap_consistency_and_position_bias(audits):
    comment = audits[(DIALOGUE_TYPE, "comment")]
    tone = comment.metrics["Tone Consistency"]
    assert tone.swap_pairs == 2  # s1 and s2 were asked both ways
    assert tone.swap_consistency == pytest.approx(0.5)  # s1 keeps its winner, s2 flips
    # Evaluated first minus second: s1 9/8 - 9/8 = 0, s2 7/8 - 8/7.
    assert tone.position_bias == pytest.approx((0 + (7 / 8 - 8 / 7)) / 2)
    overall = comment.metrics["Overall"]
    assert overall.swap_pairs == 16 and overall.swap_consistency == pytest.approx(0.5)
    assert audits[(DIALOGUE_TYPE, "human-role")].metrics["Overall"].swap_pairs == 0


def test_length_bias_is_the_rank_correlation_of_length_and_score_differences(audits):
    human = audits[(DIALOGUE_TYPE, "human-role")].metrics["Fluency"]
    lengths = list(range(12))
    scores = [min(10, 2 + i // 2) - 9.0 for i in range(12)]
    expected = scipy_stats.spearmanr(lengths, scores)
    assert human.length_pairs == 12
    assert human.length_spearman == pytest.approx(expected.statistic) and human.length_spearman > 0.9
    assert human.length_p == pytest.approx(expected.pvalue)
    assert math.isnan(audits[(DIALOGUE_TYPE, "comment")].metrics["Overall"].length_spearman)  # 3 samples: no figure


def test_breakdown_by_character(audits):
    alice = audits[(CHARACTER, "Alice")]
    assert alice.samples == 2
    # Fluency and Coherency only from s1 (9/8); the other six metrics (9/8 + 8/8) / 2.
    assert alice.metrics["Fluency"].mean_ratio == pytest.approx(9 / 8)
    assert alice.metrics["Overall"].mean_ratio == pytest.approx((2 * 9 / 8 + 6 * (9 / 8 + 1) / 2) / 8)
    assert (audits[(CHARACTER, "Bob")].samples, audits[(CHARACTER, "Bob")].not_reviewed) == (2, 1)
    assert {g for kind, g in audits if kind == CHARACTER} == {"Alice", "Bob", "Carol"}


def test_audit_markdown_reports_the_figures(audits):
    text = audit_markdown(list(audits.values()))
    assert "| judge-test | 0/15 | 1/15 |" in text  # IA: no failure; Flu: 1 of the 3 + 12 reviews
    assert "| judge-test | 16 | 0.500 |" in text  # swapped pairs, swap consistency
    assert "| Alice |" in text and "| human-role |" in text


def test_report_writes_the_audit_beside_the_table(tmp_path, capsys):
    """reviews -> RM_result's CSVs -> report.py: the audit files are written, and the rows get intervals."""
    from mmrole.eval.results import write_result_csvs
    from tests.support.scripts import load_script

    reviews = tmp_path / "eval" / "in-test_reviews" / MODEL
    reviews.mkdir(parents=True)
    (reviews / "human-role_test.json").write_text(json.dumps(_human_role_file()), encoding="utf-8")
    write_result_csvs(reviews, tmp_path / "eval" / "in-test_results" / MODEL)
    report = load_script("eval/report.py")
    assert report.main(["--eval_dir", str(tmp_path / "eval"), "--models", MODEL, "--output_dir", str(tmp_path / "o"),
                        "--n_resamples", "500"]) == 0
    with open(tmp_path / "o" / "audit.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == ALL and r["metric"] == "Overall"]
    assert len(rows) == 1 and rows[0]["reviews"] == "96" and rows[0]["failures"] == "0"
    assert json.loads((tmp_path / "o" / "audit.json").read_text())[0]["group"] == ALL
    with open(tmp_path / "o" / "table5.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["Overall_low"]) < float(row["Overall"]) < float(row["Overall_high"])
