"""data_prep/export.py: MMRole-Data as transformers/TRL `messages` + `images` records and LLaMA-Factory ShareGPT.

The role-play prompts come from records build_data.py wrote from the real raw data; the test compares the exported
text with those records' own bytes (and with the protocol's system prompt), never with the exporter's output."""

import json

import pytest

from mmrole.common.prompts import EVALUATOR_SYSTEM, ROLEPLAY_SYSTEM
from mmrole.data.export import RecordError, dataset_info_entry, list_format_parts
from tests.support.raw_data import real_slice
from tests.support.scripts import load_script

export = load_script("data_prep/export.py")
build_data = load_script("data_prep/build_data.py")


@pytest.fixture(scope="module")
def built(mmrole_data, tmp_path_factory):
    """build_data.py on a slice of the real raw data: Woody's character-image dialogues (their images are in the
    snapshot), all three dialogue types."""
    raw = real_slice(mmrole_data, tmp_path_factory.mktemp("slice") / "MMRole-Data")
    out = raw.parent / "data"
    assert build_data.main(["--data_root", str(raw), "--output_dir", str(out), "--in_test_per_type", "1"]) == 0
    return raw, out


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_train_json_exports_byte_exact_prompts_with_referenced_images(built, tmp_path, capsys):
    raw, data = built
    source = json.loads((data / "train" / "train.json").read_text(encoding="utf-8"))
    assert len(source) > 20
    out = tmp_path / "export"
    assert export.main(["--input_file", str(data / "train" / "train.json"), "--image_dir", str(raw),
                        "--output_dir", str(out)]) == 0
    messages = _read_jsonl(out / "train.messages.jsonl")
    sharegpt = _read_jsonl(out / "train.sharegpt.jsonl")
    assert [r["id"] for r in messages] == [r["id"] for r in sharegpt] == [r["id"] for r in source]
    for original, m, s in zip(source, messages, sharegpt):
        user, answer = original["conversations"][0]["value"], original["conversations"][1]["value"]
        image = user[len("Picture 1: <img>"):user.index("</img>")]
        prompt = user[user.index("</img>\n") + len("</img>\n"):]
        assert m["messages"] == [
            {"role": "system", "content": [{"type": "text", "text": ROLEPLAY_SYSTEM}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        assert m["images"] == s["images"] == [str(raw / image)]
        assert (raw / image).is_file()  # referenced, not copied: the exports hold paths to the originals
        assert s["conversations"] == [{"from": "human", "value": "<image>" + prompt}, {"from": "gpt", "value": answer}]
        assert s["system"] == ROLEPLAY_SYSTEM
    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {"mmrole_train": {"file_name": "train.sharegpt.jsonl", "formatting": "sharegpt",
                                     "columns": {"messages": "conversations", "system": "system", "images": "images"}}}
    assert not list(out.glob("*.png")) and not list(out.glob("**/*.jpg"))


def test_test_files_and_reward_model_data_export_too(built, tmp_path, mmrole_reference):
    raw, data = built
    out = tmp_path / "export"
    assert export.main(["--input_dir", str(data / "test" / "in-distribution"), "--image_dir", str(raw / "images"),
                        "--output_dir", str(out), "--format", "messages"]) == 0
    test = json.loads((data / "test" / "in-distribution" / "comment_test.json").read_text(encoding="utf-8"))[0]
    exported = _read_jsonl(out / "comment_test.messages.jsonl")[0]
    assert exported["messages"][1]["content"][1]["text"] == test["conversations"][0]["value"]
    assert exported["images"] == [str(raw / "images" / test["image"])]
    assert not (out / "dataset_info.json").exists()  # no sharegpt file, no entry
    # reward-model data (build_RM_data's format): the evaluator's system prompt goes along unchanged
    rm_sample = {"id": "m/x_IA", "system": EVALUATOR_SYSTEM,
                 "conversations": [{"from": "user", "value": "Picture 1: <img>images/a.jpg</img>\n## **[Question"},
                                   {"from": "assistant", "value": "Fine. [Scores]: (7, 8)"}]}
    (tmp_path / "rm.json").write_text(json.dumps([rm_sample]))
    assert export.main(["--input_file", str(tmp_path / "rm.json"), "--output_dir", str(out),
                        "--dataset_name", "mmrole_judge"]) == 0
    judged = _read_jsonl(out / "rm.sharegpt.jsonl")[0]
    assert judged["system"] == EVALUATOR_SYSTEM and judged["images"] == ["images/a.jpg"]
    assert judged["conversations"][0]["value"] == "<image>## **[Question"
    assert json.loads((out / "dataset_info.json").read_text())["mmrole_judge"] == dataset_info_entry("rm.sharegpt.jsonl")


def test_list_format_parts_round_trip_or_refuse():
    assert list_format_parts("Picture 1: <img>a.jpg</img>\nHi") == [{"image": "a.jpg"}, {"text": "Hi"}]
    assert list_format_parts("Look: Picture 1: <img>a</img>\nand Picture 2: <img>b</img>\n") == [
        {"text": "Look: "}, {"image": "a"}, {"text": "and "}, {"image": "b"}]
    assert list_format_parts("no image") == [{"text": "no image"}]
    with pytest.raises(RecordError, match="not Qwen-VL's list format"):
        list_format_parts("Picture 2: <img>a.jpg</img>\nHi")  # numbered wrongly: from_list_format would differ


def test_bad_records_are_listed_and_left_out_with_exit_3(tmp_path, capsys):
    good = {"id": "ok_1", "system": ROLEPLAY_SYSTEM, "conversations": [
        {"from": "user", "value": "Picture 1: <img>images/a.jpg</img>\nHello"}, {"from": "assistant", "value": "Hi"}]}
    records = [
        good,
        {"id": "no_answer", "conversations": [{"from": "user", "value": "Picture 1: <img>a</img>\nx"}]},
        {"id": "bad_format", "conversations": [{"from": "user", "value": "Picture 3: <img>a</img>\nx"},
                                               {"from": "assistant", "value": "y"}]},
        {"id": "placeholder", "conversations": [{"from": "user", "value": "Picture 1: <img>a</img>\nsay <image>"},
                                                {"from": "assistant", "value": "y"}]},
        dict(good),  # ok_1 again
        "not an object",
    ]
    (tmp_path / "train.json").write_text(json.dumps(records))
    out = tmp_path / "out"
    assert export.main(["--input_file", str(tmp_path / "train.json"), "--output_dir", str(out)]) == 3
    err = capsys.readouterr().err
    for sample_id, reason in (("no_answer", "assistant turn"), ("bad_format", "not Qwen-VL's list format"),
                              ("placeholder", "reads as an image"), ("ok_1", "used twice"), ("#5", "not a JSON object")):
        assert any(f"sample {sample_id}: " in line and reason in line for line in err.splitlines()), (sample_id, err)
    assert [r["id"] for r in _read_jsonl(out / "train.messages.jsonl")] == ["ok_1"]
    assert [r["id"] for r in _read_jsonl(out / "train.sharegpt.jsonl")] == ["ok_1"]


def test_check_images_leaves_out_missing_images_and_files_that_cannot_be_read(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "fake.jpg").write_text("not a picture")
    records = [{"id": f"s{i}", "conversations": [{"from": "user", "value": f"Picture 1: <img>images/{name}</img>\nx"},
                                                 {"from": "assistant", "value": "y"}]}
               for i, name in enumerate(["fake.jpg", "gone.jpg"])]
    (tmp_path / "train.json").write_text(json.dumps(records))
    (tmp_path / "broken.json").write_text("[{\"id\": ")
    out = tmp_path / "out"
    args = ["--input_file", str(tmp_path / "train.json"), "--image_dir", str(tmp_path), "--output_dir", str(out)]
    assert export.main(args) == 0  # kept, and counted
    assert "1 image file(s) not found" in capsys.readouterr().out  # gone.jpg (fake.jpg exists; only checks read it)
    assert export.main(args + ["--check_images"]) == 3
    err = capsys.readouterr().err
    assert "sample s0: not an image" in err and "sample s1: image not found" in err
    assert export.main(["--input_file", str(tmp_path / "broken.json"), str(tmp_path / "train.json"),
                        "--output_dir", str(out)]) == 1  # the unreadable file is named, the other one exported
    assert "broken.json: malformed JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        export.main(["--input_file", str(tmp_path / "train.json")])
    assert exit_.value.code == 2
    assert export.main(["--input_file", str(tmp_path / "nothing.json"), "--output_dir", str(out)]) == 2
