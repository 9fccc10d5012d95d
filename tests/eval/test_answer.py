"""inference.py orchestration (mmrole.eval.answer) with an in-process model that replays published
answers. The hf backend (real generation, batching, original-procedure equivalence) is tested in
tests/eval/test_answer_hf.py."""

import json
import os

import pytest

from mmrole.backends.base import GenerationParams
from mmrole.common.prompts import ROLEPLAY_SYSTEM
from mmrole.eval.answer import answer_files
from mmrole.eval.files import input_files

from tests.support.replay import ReplayJudge, answers_with_images  # a replaying Backend (keyed by request key)

from tests.support.scripts import load_script

inference = load_script("inference.py")


def _test_file(tmp_path, mmrole_reference, model, name, n=None, mutate=None):
    """A test file (published answers stripped) + placeholder images; returns (dir, images, answers)."""
    published = json.loads((mmrole_reference / "in-test_answers" / model / name).read_text(encoding="utf-8"))[:n]

    def strip_answers(samples):
        for sample in samples:
            del sample["conversations"][1]["answer"]
        if mutate:
            mutate(samples)

    test_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, model, name, n=n, mutate=strip_answers)
    return test_dir, image_dir, {(s["id"],): s["conversations"][1]["answer"] for s in published}


def _answer(test_dir, out_dir, model, image_dir):
    return answer_files(input_files(test_dir, None), out_dir, model, GenerationParams(greedy=True), image_dir,
                        progress=False)


def test_reproduces_the_published_answers_file_byte_for_byte(mmrole_reference, tmp_path):
    name = "human-role_test.json"
    test_dir, image_dir, answers = _test_file(tmp_path, mmrole_reference, "llava-next-mistral-7b", name)
    model = ReplayJudge(answers)
    [summary] = _answer(test_dir, tmp_path / "out", model, image_dir)
    expected = (mmrole_reference / "in-test_answers" / "llava-next-mistral-7b" / name).read_bytes()
    assert (tmp_path / "out" / name).read_bytes() == expected
    assert summary.done == 72 and summary.failed == [] and summary.skipped == []
    request, params = model.requests[5]
    sample = json.loads((test_dir / name).read_text())[5]
    assert request.system == ROLEPLAY_SYSTEM and params.greedy
    assert request.query == ({"image": os.path.join(str(image_dir), sample["image"])},
                             {"text": sample["conversations"][0]["value"]})


def test_kill_and_resume_gives_the_uninterrupted_file(mmrole_reference, tmp_path):
    name = "comment_test.json"
    test_dir, image_dir, answers = _test_file(tmp_path, mmrole_reference, "yi-vl-6b", name, n=9)
    _answer(test_dir, tmp_path / "full", ReplayJudge(answers), image_dir)
    with pytest.raises(KeyboardInterrupt):
        _answer(test_dir, tmp_path / "resumed", ReplayJudge(answers, fail_after=4), image_dir)
    second = ReplayJudge(answers)
    _answer(test_dir, tmp_path / "resumed", second, image_dir)
    assert len(second.requests) == 5
    assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


class _CountingReplay(ReplayJudge):
    """Also records how many requests each generate_iter call received."""

    def __init__(self, replies, fail_after=None):
        super().__init__(replies, fail_after)
        self.calls = []

    def generate_iter(self, requests, params):
        self.calls.append(len(requests))
        return super().generate_iter(requests, params)


def test_all_files_go_to_the_backend_as_one_stream_each_answer_into_its_own_journal(mmrole_reference, tmp_path):
    # One stream, so a batching backend refills a file's free rows with the next file's prompts.
    answers = {}
    for name in ("comment_test.json", "human-role_test.json"):
        test_dir, image_dir, file_answers = _test_file(tmp_path, mmrole_reference, "yi-vl-6b", name, n=5)
        answers.update(file_answers)
    model = _CountingReplay(answers)
    summaries = _answer(test_dir, tmp_path / "out", model, image_dir)
    assert model.calls == [10] and [s.done for s in summaries] == [5, 5]
    for name in ("comment_test.json", "human-role_test.json"):
        written = json.loads((tmp_path / "out" / name).read_text(encoding="utf-8"))
        assert {s["id"]: s["conversations"][1]["answer"] for s in written} == {
            key[0]: answer for key, answer in answers.items() if key[0] in {s["id"] for s in written}}
        assert len(written) == 5

    # Killed in the second file: the first file's 5 and the second's first 2 answers are kept by their own journals;
    # the rerun asks for the 3 others only and gives the uninterrupted files.
    with pytest.raises(KeyboardInterrupt):
        _answer(test_dir, tmp_path / "killed", _CountingReplay(answers, fail_after=7), image_dir)
    rerun = _CountingReplay(answers)
    _answer(test_dir, tmp_path / "killed", rerun, image_dir)
    assert rerun.calls == [3]
    for name in ("comment_test.json", "human-role_test.json"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()


def test_bad_samples_and_api_errors_are_reported_and_skipped(mmrole_reference, tmp_path, capsys):
    name = "inter-role_test.json"

    def mutate(samples):
        samples[0]["image"] = "gone.jpg"
        samples[1]["conversations"] = [samples[1]["conversations"][0]]
        samples[2]["conversations"][1]["answer"] = "a stale answer of another model"

    test_dir, image_dir, answers = _test_file(tmp_path, mmrole_reference, "mmrole-agent", name, n=5, mutate=mutate)
    (image_dir / "gone.jpg").unlink()
    samples = json.loads((test_dir / name).read_text())
    answers[(samples[3]["id"],)] = None  # the endpoint fails for good on this one
    model = ReplayJudge(answers)
    [summary] = _answer(test_dir, tmp_path / "out", model, image_dir)
    reasons = {p.sample_id: p.message for p in summary.skipped}
    assert "image not found" in reasons[samples[0]["id"]]
    assert "conversations" in reasons[samples[1]["id"]]
    [failed] = summary.failed
    assert failed.sample_id == samples[3]["id"] and "HTTP 500" in failed.message
    out = json.loads((tmp_path / "out" / name).read_text())
    assert ["answer" in s["conversations"][1] for s in out if len(s["conversations"]) > 1] == [False, True, False, True]
    assert out[2]["conversations"][1]["answer"] == answers[(samples[2]["id"],)]
    # The next run asks only the failed sample again.
    answers[(samples[3]["id"],)] = "Now it works."
    model = ReplayJudge(answers)
    [summary] = _answer(test_dir, tmp_path / "out", model, image_dir)
    assert [r.key for r, _ in model.requests] == [(samples[3]["id"],)]
    assert summary.done == 3 and summary.failed == []


def test_help_names_the_original_flags(capsys):
    with pytest.raises(SystemExit):
        inference.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--model_path", "--image_dir", "--input_dir", "--input_file", "--output_dir", "--no_random",
                 "--use_lora", "--backend", "--batch_size", "--max_new_tokens"):
        assert flag in text


def test_openai_backend_end_to_end_against_the_stub(mmrole_reference, tmp_path, monkeypatch, capsys):
    """inference.py --backend openai: the endpoint gets the role-play system, the image, the prompt."""
    import base64

    from PIL import Image

    from tests.support.openai_stub import OpenAIStub

    name = "comment_test.json"
    test_dir, image_dir, answers = _test_file(tmp_path, mmrole_reference, "gpt-4-turbo", name, n=3)
    samples = json.loads((test_dir / name).read_text())
    for sample in samples:
        Image.new("RGB", (3, 3), (1, 2, 3)).save(image_dir / sample["image"], format="PNG")
    by_prompt = {s["conversations"][0]["value"]: answers[(s["id"],)] for s in samples}
    monkeypatch.setenv("AGENT_KEY", "sk-agent-secret-000111")
    with OpenAIStub(lambda request: by_prompt[request.user_text]) as stub:
        assert inference.main(["--backend", "openai", "--model", "some-mrpa", "--base_url", stub.base_url,
                               "--api_key_env", "AGENT_KEY", "--image_dir", str(image_dir), "--input_dir",
                               str(test_dir), "--output_dir", str(tmp_path / "out"), "--no_progress"]) == 0
    expected = json.loads((mmrole_reference / "in-test_answers" / "gpt-4-turbo" / name).read_text())[:3]
    assert json.loads((tmp_path / "out" / name).read_text()) == expected
    assert len(stub.completion_requests) == 3
    for request in stub.completion_requests:
        assert request.system_prompt == ROLEPLAY_SYSTEM and request.model == "some-mrpa"
        assert "seed" not in request.body  # only sent when --seed is given
        [url] = request.image_urls
        assert base64.b64decode(url.split(",", 1)[1]) == (image_dir / samples[0]["image"]).read_bytes()
    assert "sk-agent-secret" not in capsys.readouterr().err


def test_malformed_test_file_is_reported_the_others_answered_exit_status_1(mmrole_reference, tmp_path, monkeypatch,
                                                                           capsys):
    from tests.support.openai_stub import OpenAIStub

    name = "comment_test.json"
    test_dir, image_dir, answers = _test_file(tmp_path, mmrole_reference, "gpt-4-turbo", name, n=2)
    (test_dir / "a_broken_test.json").write_text('[{"id": "x"', encoding="utf-8")
    samples = json.loads((test_dir / name).read_text())
    by_prompt = {s["conversations"][0]["value"]: answers[(s["id"],)] for s in samples}
    monkeypatch.setenv("AGENT_KEY", "sk-agent-secret-000111")
    with OpenAIStub(lambda request: by_prompt[request.user_text]) as stub:
        code = inference.main(["--backend", "openai", "--model", "m", "--base_url", stub.base_url, "--api_key_env",
                               "AGENT_KEY", "--image_dir", str(image_dir), "--input_dir", str(test_dir),
                               "--output_dir", str(tmp_path / "out"), "--no_progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{test_dir / 'a_broken_test.json'}: file skipped: malformed JSON at line 1" in err
    assert "1 file(s) not processed" in err
    assert not (tmp_path / "out" / "a_broken_test.json").exists()
    out = json.loads((tmp_path / "out" / name).read_text())
    assert [s["conversations"][1]["answer"] for s in out] == [answers[(s["id"],)] for s in samples]


def test_answers_of_another_model_in_the_journal_are_refused_unless_redo_stale(mmrole_reference, tmp_path):
    name = "comment_test.json"
    test_dir, image_dir, answers = _test_file(tmp_path, mmrole_reference, "yi-vl-6b", name, n=3)
    _answer(test_dir, tmp_path / "out", ReplayJudge(answers, model="yi"), image_dir)
    before = (tmp_path / "out" / name).read_bytes()
    other = {key: f"other model's answer to {key[0]}" for key in answers}
    model = ReplayJudge(other, model="agent")
    [summary] = _answer(test_dir, tmp_path / "out", model, image_dir)
    assert model.requests == [] and summary.unusable
    assert "3 result(s) here were made with other settings (model 'yi' -> now 'agent')" in summary.skipped[0].message
    assert (tmp_path / "out" / name).read_bytes() == before
    [summary] = answer_files(input_files(test_dir, None), tmp_path / "out", model, GenerationParams(greedy=True),
                             image_dir, progress=False, redo_stale=True)
    assert len(model.requests) == 3 and summary.done == 3
    out = json.loads((tmp_path / "out" / name).read_text())
    assert [s["conversations"][1]["answer"] for s in out] == [other[(s["id"],)] for s in out]


def test_another_image_dir_changes_the_prompt_so_answers_are_redone(mmrole_reference, tmp_path):
    """Qwen-VL reads the image path as part of the prompt: the journal notices the changed request."""
    import shutil

    name = "comment_test.json"
    test_dir, image_dir, answers = _test_file(tmp_path, mmrole_reference, "yi-vl-6b", name, n=2)
    _answer(test_dir, tmp_path / "out", ReplayJudge(answers), image_dir)
    moved = shutil.copytree(image_dir, tmp_path / "moved_images")
    model = ReplayJudge(answers)
    [summary] = _answer(test_dir, tmp_path / "out", model, moved)
    assert len(model.requests) == 2 and all(str(moved) in r.query[0]["image"] for r, _ in model.requests)
    assert any(note.startswith("2 journal result(s) redone: their request changed") for note in summary.notes)
