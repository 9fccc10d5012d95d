import csv
import json

import pytest

from mmrole.common.metrics import METRIC_ABBRS, METRIC_NAMES, mean_ratios, parse_score_pair


@pytest.mark.parametrize(
    "review, expected",
    [
        ("Good. [Scores]: (8, 9)", (8.0, 9.0)),
        ("Good. [Scores]: 10, 9", (10.0, 9.0)),
        ("Good. [Scores]:\n(7.5, 9)\nmore text", (7.5, 9.0)),
        ("[Scores]: (Model A: 6, Model B: 8)", (6.0, 8.0)),
        ("no marker (8, 9)", None),
        ("[Scores]: (8, 9) [Scores]: (1, 2)", None),
        ("[Scores]: (8, 9, 10)", None),
        ("[Scores]: (eight, 9)", None),
        ("[Scores]: ", None),
        (None, None),
    ],
)
def test_parse_score_pair_rules(review, expected):
    assert parse_score_pair(review) == expected


def _published_reviews(mmrole_reference):
    files = sorted((mmrole_reference / "in-test_reviews").glob("*/*.json"))
    assert len(files) == 18
    for path in files:
        yield path, json.loads(path.read_text(encoding="utf-8"))


def test_parse_score_pair_matches_every_published_score(mmrole_reference):
    checked = 0
    for path, samples in _published_reviews(mmrole_reference):
        for sample in samples:
            for metric, review in (sample.get("rm_review") or {}).items():
                expected = tuple(review["score"]) if review["score"] else None
                assert parse_score_pair(review["review"]) == expected, (path.name, sample["id"], metric)
                checked += 1
    assert checked > 10000


def test_mean_ratios_reproduce_published_csvs_bit_for_bit(mmrole_reference):
    for path, samples in _published_reviews(mmrole_reference):
        reviewed = [
            {metric: review["score"] for metric, review in sample["rm_review"].items()}
            for sample in samples
            if sample.get("rm_review")
        ]
        count, scores = mean_ratios(reviewed)
        csv_path = mmrole_reference / "in-test_results" / path.parent.name / (path.stem + ".csv")
        header, row = list(csv.reader(csv_path.open()))
        assert header == ["count", *METRIC_NAMES]
        assert [str(count)] + [repr(scores[name]) for name in METRIC_NAMES] == row, csv_path


def test_mean_ratios_leaves_failed_metric_out_of_its_mean_only():
    good = {name: (8.0, 8.0) for name in METRIC_NAMES}
    partial = dict(good, Fluency=None)
    partial["Coherency"] = (4.0, 8.0)
    count, scores = mean_ratios([good, partial])
    assert count == 2
    assert scores["Fluency"] == 1.0
    assert scores["Coherency"] == 0.75
    assert METRIC_ABBRS == ("IA", "Flu", "Coh", "ITR", "RA", "PC", "KC", "TC")


def test_parsed_pair_equals_stored_lists_and_tuples():
    pair = parse_score_pair("ok [Scores]: (9, 10)")
    assert pair == [9.0, 10.0] and [9.0, 10.0] == pair and pair == (9.0, 10.0)
    assert pair != [10.0, 9.0] and pair != (10.0, 9.0)
    assert list(pair) == [9.0, 10.0] and {pair: 1}[(9.0, 10.0)] == 1
