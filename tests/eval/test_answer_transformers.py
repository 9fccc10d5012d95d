"""inference.py and eval/RM_review.py with --backend transformers (the tiny Qwen2.5-VL): bad input is one line naming
the checkpoint or the file and sample id, the other samples go on, and the exit statuses are the README's."""

import json
import shutil

import pytest
from PIL import Image

from tests.support.scripts import load_script

inference = load_script("inference.py")
RM_review = load_script("eval/RM_review.py")


@pytest.fixture
def work(mmrole_reference, tmp_path):
    """Three published comment samples (answers stripped), their images drawn; the second image is 2x600 pixels,
    which PIL reads but Qwen2.5-VL's processor refuses (aspect ratio over 200)."""
    published = json.loads((mmrole_reference / "in-test_answers" / "mmrole-agent" / "comment_test.json").read_text())
    samples = [json.loads(json.dumps(published[i])) for i in (1, 4, 7)]
    for number, sample in enumerate(samples):
        sample["conversations"][1].pop("answer", None)
        target = tmp_path / "images" / sample["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (2, 600) if number == 1 else (120, 80), (30 * number, 90, 200)).save(target, "PNG")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "comment_test.json").write_text(json.dumps(samples, ensure_ascii=False, indent=4))
    return tmp_path, samples


def _args(work_dir, checkpoint, out, *extra):
    return ["--backend", "transformers", "--model_path", str(checkpoint), "--input_dir", str(work_dir / "test"),
            "--image_dir", str(work_dir / "images"), "--output_dir", str(out), "--no_random", "--max_new_tokens", "6",
            "--no_progress", *extra]


def test_an_image_the_processor_rejects_is_one_line_and_the_others_are_answered(work, tiny_qwen2_5_vl, capsys):
    work_dir, samples = work
    out = work_dir / "answers"
    assert inference.main(_args(work_dir, tiny_qwen2_5_vl, out)) == 3  # finished, one sample not answered
    err = capsys.readouterr().err
    bad = samples[1]["id"]
    lines = [line for line in err.splitlines() if bad in line]
    assert len(lines) == 1 and "comment_test.json" in lines[0] and f"checkpoint {tiny_qwen2_5_vl}" in lines[0]
    assert "the processor rejects the image" in lines[0] and "Traceback" not in err
    answered = json.loads((out / "comment_test.json").read_text())
    assert ["answer" in s["conversations"][1] for s in answered] == [True, False, True]
    journal = [json.loads(line) for line in (out / "comment_test.journal.jsonl").read_text().splitlines()]
    assert {entry["run"]["backend"] for entry in journal} == {"transformers"}
    assert {entry["run"]["model"] for entry in journal} == {str(tiny_qwen2_5_vl)}
    # another model into the same folder is refused, naming what differs
    other = work_dir / "other-checkpoint"
    shutil.copytree(tiny_qwen2_5_vl, other)
    assert inference.main(_args(work_dir, other, out)) == 1
    assert "made with other settings" in capsys.readouterr().err


@pytest.mark.parametrize("problem, message", [
    ("not_image_text", "is not an image-text-to-text model: model_type 'qwen'"),
    ("no_template", "has no chat template"),
    ("missing", "checkpoint folder not found"),
])
def test_a_checkpoint_that_cannot_be_used_is_one_line_and_exit_2(work, tiny_qwen2_5_vl, qwen_reference, capsys,
                                                                   problem, message):
    work_dir, _ = work
    checkpoint = {"not_image_text": qwen_reference / "tiny-qwen-vl-chat", "missing": work_dir / "nowhere",
                  "no_template": work_dir / "no-template"}[problem]
    if problem == "no_template":
        shutil.copytree(tiny_qwen2_5_vl, checkpoint)
        (checkpoint / "chat_template.json").unlink()
    assert RM_review.main(_args(work_dir, checkpoint, work_dir / "reviews")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(checkpoint) in err[0]


def test_the_other_backends_options_are_refused(work, tiny_qwen2_5_vl, capsys):
    work_dir, _ = work
    for flag, message in ((["--use_lora"], "--use_lora applies to --backend hf only"),
                          (["--base_url", "http://127.0.0.1:9/v1"], "--base_url applies to --backend openai only")):
        with pytest.raises(SystemExit) as exit_:
            inference.main(_args(work_dir, tiny_qwen2_5_vl, work_dir / "x", *flag))
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_sample_longer_than_the_context_is_one_line_and_the_others_are_answered(work, tiny_qwen2_5_vl, capsys):
    """A checkpoint whose context is 1,500 tokens: the published prompts (2,900-3,900 characters, about 700-950
    tokens) fit; the third sample's prompt said four times (about 2,700 tokens) does not."""
    work_dir, samples = work
    short = work_dir / "short-context"
    shutil.copytree(tiny_qwen2_5_vl, short)
    config = json.loads((short / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 1500
    (short / "config.json").write_text(json.dumps(config))
    samples[2]["conversations"][0]["value"] *= 4
    (work_dir / "test" / "comment_test.json").write_text(json.dumps(samples, ensure_ascii=False, indent=4))
    out = work_dir / "answers"
    assert inference.main(_args(work_dir, short, out)) == 3
    err = capsys.readouterr().err
    long_lines = [line for line in err.splitlines() if samples[2]["id"] in line]
    assert len(long_lines) == 1 and "comment_test.json" in long_lines[0] and f"checkpoint {short}" in long_lines[0]
    assert "longer than the model's context of 1500 tokens" in long_lines[0] and "Traceback" not in err
    answered = json.loads((out / "comment_test.json").read_text())
    assert ["answer" in s["conversations"][1] for s in answered] == [True, False, False]  # the second: its image
