"""build_RM_data: published reviews -> reward-model training samples (Qwen-VL fine-tuning format)."""

import json
import os

from mmrole.common.metrics import ABBR_OF, METRIC_NAMES
from mmrole.common.prompts import EVALUATOR_SYSTEM, judge_prompt

from tests.support.scripts import load_script

build_RM_data = load_script("eval/build_RM_data.py")
from tests.support.replay import TINY_PNG  # a real image: images are checked


def _copy(mmrole_reference, tmp_path, model, name, mutate=None):
    samples = json.loads((mmrole_reference / "in-test_reviews" / model / name).read_text(encoding="utf-8"))
    if mutate:
        mutate(samples)
    folder = tmp_path / "reviews" / model
    folder.mkdir(parents=True)
    (folder / name).write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    return folder, samples


def test_every_published_review_becomes_a_training_sample(mmrole_reference, tmp_path, capsys):
    """llava's comment file: 71 reviewed samples x 8 metrics; the empty answer is listed, left out."""
    folder = mmrole_reference / "in-test_reviews" / "llava-next-mistral-7b"
    out = tmp_path / "rm_train.json"
    assert build_RM_data.main(["--input_dir", str(folder), "--input_file", "comment_test.json", "--image_dir",
                               "images", "--output_file", str(out), "--no_check_images"]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert len(data) == 71 * 8
    assert "sample Nick_Fury_comment_COCO_45_1: no review" in capsys.readouterr().err
    published = json.loads((folder / "comment_test.json").read_text(encoding="utf-8"))
    by_id = {item["id"]: item for item in data}
    assert len(by_id) == len(data)
    for sample in published[:5]:
        for metric in METRIC_NAMES:
            item = by_id[f"llava-next-mistral-7b/{sample['id']}_{ABBR_OF[metric]}"]
            turn = sample["conversations"][1]
            prompt = judge_prompt(question=sample["conversations"][0]["value"], answer_a=turn["answer"],
                                  answer_b=turn["value"], role=sample["role"], script=sample["script"],
                                  other_role=sample["other_role"], metric=metric)
            assert item["system"] == EVALUATOR_SYSTEM
            assert item["conversations"] == [
                {"from": "user", "value": f"Picture 1: <img>{os.path.join('images', sample['image'])}</img>\n" + prompt},
                {"from": "assistant", "value": sample["rm_review"][metric]["review"]},
            ]


def test_unparseable_inconsistent_and_imageless_reviews_are_left_out(mmrole_reference, tmp_path, capsys):
    def mutate(samples):
        samples[0]["rm_review"]["Fluency"]["review"] = "Fine answers, both of them."  # no [Scores]
        samples[1]["rm_review"]["Coherency"]["score"] = [1.0, 10.0]  # disagrees with its text
        samples[2]["image"] = "missing/nowhere.jpg"

    folder, samples = _copy(mmrole_reference, tmp_path, "mmrole-agent", "inter-role_test.json", mutate)
    images = tmp_path / "images"
    for sample in samples:
        if "missing" not in sample["image"]:
            (images / sample["image"]).parent.mkdir(parents=True, exist_ok=True)
            (images / sample["image"]).write_bytes(TINY_PNG)
    out = tmp_path / "rm.json"
    assert build_RM_data.main(["--input_dir", str(folder), "--image_dir", str(images), "--output_file", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert len(data) == 72 * 8 - 1 - 1 - 8
    err = capsys.readouterr().err
    assert f"sample {samples[0]['id']} [Fluency]: review without a parseable score pair" in err
    assert f"sample {samples[1]['id']} [Coherency]: stored score [1.0, 10.0] disagrees" in err
    assert f"sample {samples[2]['id']}: image not found" in err
    ids = {item["id"] for item in data}
    assert f"mmrole-agent/{samples[0]['id']}_Flu" not in ids and f"mmrole-agent/{samples[0]['id']}_Coh" in ids


def test_unusable_file_is_reported_and_the_other_files_still_make_the_data(mmrole_reference, tmp_path, capsys):
    good = mmrole_reference / "in-test_reviews" / "mmrole-agent"
    broken = tmp_path / "reviews" / "broken-model"
    broken.mkdir(parents=True)
    (broken / "comment_test.json").write_text('[{"id": "x", "conversations": [', encoding="utf-8")
    out = tmp_path / "rm.json"
    code = build_RM_data.main(["--input_dir", str(broken), str(good), "--input_file", "comment_test.json",
                               "--output_file", str(out), "--no_check_images"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{broken / 'comment_test.json'}: file skipped: malformed JSON at line 1" in err
    data = json.loads(out.read_text(encoding="utf-8"))
    assert len(data) == 72 * 8 and all(item["id"].startswith("mmrole-agent/") for item in data)
