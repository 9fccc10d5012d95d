"""RM_result: per-file result CSVs, byte for byte as published; failures listed, never scored."""

import copy
import json
import subprocess
import sys

import pytest

from mmrole.common.metrics import METRIC_NAMES

from tests.support.scripts import load_script

RM_result = load_script("eval/RM_result.py")


def _models(mmrole_reference):
    return sorted(p.name for p in (mmrole_reference / "in-test_reviews").iterdir())


def test_reproduces_every_published_csv_byte_for_byte(mmrole_reference, tmp_path, capsys):
    models = _models(mmrole_reference)
    assert len(models) == 6
    for model in models:
        out = tmp_path / model
        assert RM_result.main(["--input_dir", str(mmrole_reference / "in-test_reviews" / model),
                               "--output_dir", str(out)]) == 0
        published = sorted((mmrole_reference / "in-test_results" / model).glob("*.csv"))
        assert len(published) == 3
        for csv_path in published:
            assert (out / csv_path.name).read_bytes() == csv_path.read_bytes(), (model, csv_path.name)
    err = capsys.readouterr().err
    # The two In-Test samples with an empty answer are listed, not scored.
    assert "Nick_Fury_comment_COCO_45_1: empty answer" in err
    assert "Liam_Johnson_role-role-dialogue_script_12_6: empty answer" in err


def _small_reviews(mmrole_reference, tmp_path):
    samples = json.loads((mmrole_reference / "in-test_reviews" / "mmrole-agent" / "comment_test.json").read_text())
    return copy.deepcopy(samples[:3])


def _run(tmp_path, capsys, samples, *extra, status=0):
    (tmp_path / "rev").mkdir(exist_ok=True)
    (tmp_path / "rev" / "x_test.json").write_text(json.dumps(samples), encoding="utf-8")
    code = RM_result.main(["--input_dir", str(tmp_path / "rev"), "--output_dir", str(tmp_path / "res"), *extra])
    assert code == status
    printed = capsys.readouterr()
    return printed.out + printed.err


def _row(tmp_path):
    header, row = (tmp_path / "res" / "x_test.csv").read_text().splitlines()
    return int(row.split(",")[0]), dict(zip(METRIC_NAMES, map(float, row.split(",")[1:9])))


def _missing_column(tmp_path):
    header, row = (tmp_path / "res" / "x_test.csv").read_text().splitlines()
    return dict(zip(header.split(","), row.split(","))).get("missing_reviews")


def test_failed_and_missing_reviews_are_listed_not_scored(mmrole_reference, tmp_path, capsys):
    samples = _small_reviews(mmrole_reference, tmp_path)
    for sample in samples:
        for metric in METRIC_NAMES:
            sample["rm_review"][metric]["score"] = [8.0, 8.0]
    samples[0]["rm_review"]["Fluency"]["score"] = {}  # what the original wrote for a parse failure
    del samples[1]["rm_review"]["Coherency"]
    samples[1]["rm_review"]["Fluency"]["score"] = [4.0, 8.0]
    samples[2]["conversations"][1]["answer"] = ""
    del samples[2]["rm_review"]
    err = _run(tmp_path, capsys, samples, status=3)  # incomplete: exit 3 without --partial
    assert _missing_column(tmp_path) == "2"  # the failed and the missing review; the empty answer is deliberate
    assert "x_test: count 2; INCOMPLETE: 2 review(s) missing or failed" in err
    count, scores = _row(tmp_path)
    assert count == 2
    assert scores["Fluency"] == 0.5  # only sample 1 (4/8): the failed review is not a score
    assert scores["Coherency"] == 1.0  # only sample 0
    assert scores["Tone Consistency"] == 1.0
    for sample_id, what in ((samples[0]["id"], " [Fluency]: review without a valid score pair"),
                            (samples[1]["id"], " [Coherency]: no review"),
                            (samples[2]["id"], ": empty answer: not reviewed")):
        assert f"x_test.json: sample {sample_id}{what}" in err

    strict_err = _run(tmp_path, capsys, samples, "--strict", "--partial")
    count, scores = _row(tmp_path)
    assert count == 3
    assert scores["Fluency"] == pytest.approx((0 + 0.5 + 0) / 3)
    assert scores["Coherency"] == pytest.approx((1 + 0 + 0) / 3)
    assert scores["Tone Consistency"] == pytest.approx(2 / 3)
    assert "(ratio 0)" in strict_err


def test_unusable_files_are_reported_and_the_others_still_scored(mmrole_reference, tmp_path, capsys):
    reviews = tmp_path / "rev"
    reviews.mkdir()
    (reviews / "broken.json").write_text('[{"id": "a",', encoding="utf-8")
    (reviews / "object.json").write_text('{"id": "a"}', encoding="utf-8")
    good = mmrole_reference / "in-test_reviews" / "mmrole-agent" / "comment_test.json"
    (reviews / "comment_test.json").write_bytes(good.read_bytes())
    assert RM_result.main(["--input_dir", str(reviews), "--output_dir", str(tmp_path / "res")]) == 1
    err = capsys.readouterr().err
    assert f"{reviews / 'broken.json'}: file skipped: malformed JSON at line 1" in err
    assert f"{reviews / 'object.json'}: file skipped: expected a JSON list of samples, found dict" in err
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["comment_test.csv"]
    published = mmrole_reference / "in-test_results" / "mmrole-agent" / "comment_test.csv"
    assert (tmp_path / "res" / "comment_test.csv").read_bytes() == published.read_bytes()


def test_missing_input_folder_is_an_error(tmp_path, capsys):
    assert RM_result.main(["--input_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "res")]) == 2
    assert "nowhere: no such directory" in capsys.readouterr().err


def test_help_runs_from_any_directory(tmp_path, repo_root):
    proc = subprocess.run([sys.executable, str(repo_root / "eval" / "RM_result.py"), "--help"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and "--strict" in proc.stdout and "mean" in proc.stdout


def test_scores_outside_0_to_10_and_duplicate_ids_are_reported_never_counted(mmrole_reference, tmp_path, capsys):
    samples = _small_reviews(mmrole_reference, tmp_path)
    for sample in samples:
        for metric in METRIC_NAMES:
            sample["rm_review"][metric]["score"] = [8.0, 8.0]
    samples[0]["rm_review"]["Fluency"]["score"] = [-2.0, 8.0]  # negative
    samples[1]["rm_review"]["Coherency"]["score"] = [85.0, 8.0]  # 8.5 misread
    duplicate = copy.deepcopy(samples[2])  # the same id again, scored differently
    for metric in METRIC_NAMES:
        duplicate["rm_review"][metric]["score"] = [2.0, 8.0]
    err = _run(tmp_path, capsys, samples + [duplicate], status=3)
    count, scores = _row(tmp_path)
    assert count == 3  # the duplicate is not counted a second time
    assert scores["Fluency"] == 1.0 and scores["Coherency"] == 1.0 and scores["Tone Consistency"] == 1.0
    assert _missing_column(tmp_path) == str(1 + 1 + 8)
    assert f"sample {samples[0]['id']} [Fluency]: score -2 outside 0..10: not a score" in err
    assert f"sample {samples[1]['id']} [Coherency]: score 85 outside 0..10: not a score" in err
    assert f"sample {samples[2]['id']}: duplicate sample id (record #3): not counted, the first record #2 is" in err


def test_a_file_without_any_score_is_marked_not_a_count_of_0_with_nan(mmrole_reference, tmp_path, capsys):
    samples = _small_reviews(mmrole_reference, tmp_path)
    for sample in samples:
        del sample["rm_review"]  # the judge failed on everything (e.g. a rejected key)
    err = _run(tmp_path, capsys, samples, status=3)
    assert _missing_column(tmp_path) == str(3 * 8)
    assert "x_test: count 0; INCOMPLETE: 24 review(s) missing or failed" in err
    assert "pass --partial to accept partial results" in err
    _run(tmp_path, capsys, samples, "--partial", status=0)  # asked for: accepted, still marked
    assert _missing_column(tmp_path) == str(3 * 8)


def test_an_empty_reviews_folder_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "rev").mkdir()
    assert RM_result.main(["--input_dir", str(tmp_path / "rev"), "--output_dir", str(tmp_path / "res")]) == 2
    assert "no *.json files here: nothing to do" in capsys.readouterr().err
