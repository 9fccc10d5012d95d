"""Review orchestration (mmrole.eval.review) with an in-process judge that replays published reviews.

The HTTP path (openai backend against tests/support/openai_stub.py) is in tests/eval/test_gpt_review.py.
"""

import json
import os

import pytest

from mmrole.backends.base import GenerationParams
from mmrole.common.metrics import METRIC_NAMES
from mmrole.common.prompts import EVALUATOR_SYSTEM, judge_prompt
from mmrole.eval.files import input_files
from mmrole.eval.review import NORMAL, SWAPPED, ReviewConfig, review_files
from tests.support.replay import ReplayJudge, answers_with_images


def _published(mmrole_reference, model, name):
    return json.loads((mmrole_reference / "in-test_reviews" / model / name).read_text(encoding="utf-8"))


def _replies(reviews, order=NORMAL):
    return {(s["id"], m, order): r["review"] for s in reviews for m, r in s.get("rm_review", {}).items()}


def _review(answers_dir, out_dir, judge, image_dir, params=GenerationParams(greedy=True), **config):
    config = ReviewConfig(image_dir=str(image_dir), params=params, progress=False, **config)
    return review_files(input_files(answers_dir, None), out_dir, judge, config)


def test_whole_file_reproduces_the_published_reviews_byte_for_byte(mmrole_reference, tmp_path):
    """llava's comment file: 71 reviewed samples, one empty answer (not sent, no rm_review)."""
    name = "comment_test.json"
    published = _published(mmrole_reference, "llava-next-mistral-7b", name)
    answers_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, "llava-next-mistral-7b", name)
    judge = ReplayJudge(_replies(published))
    [summary] = _review(answers_dir, tmp_path / "out", judge, image_dir)
    expected = (mmrole_reference / "in-test_reviews" / "llava-next-mistral-7b" / name).read_bytes()
    assert (tmp_path / "out" / name).read_bytes() == expected
    assert len(judge.requests) == 71 * 8
    assert summary.done == 71 and summary.samples == 72
    assert [p.sample_id for p in summary.skipped] == ["Nick_Fury_comment_COCO_45_1"]
    assert "empty answer" in summary.skipped[0].message


def test_requests_carry_the_protocol_prompt_system_and_image(mmrole_reference, tmp_path):
    name = "inter-role_test.json"
    answers_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, "mmrole-agent", name, n=2)
    judge = ReplayJudge(_replies(_published(mmrole_reference, "mmrole-agent", name)))
    _review(answers_dir, tmp_path / "out", judge, image_dir)
    sample = json.loads((answers_dir / name).read_text())[1]
    sent = [r for r, _ in judge.requests if r.key[0] == sample["id"]]
    assert [r.key[1] for r in sent] == list(METRIC_NAMES)
    for request in sent:
        assert request.system == EVALUATOR_SYSTEM
        assert request.query[0] == {"image": os.path.join(str(image_dir), sample["image"])}
        assert request.query[1]["text"] == judge_prompt(
            question=sample["conversations"][0]["value"], answer_a=sample["conversations"][1]["answer"],
            answer_b=sample["conversations"][1]["value"], role=sample["role"], script=sample["script"],
            other_role=sample["other_role"], metric=request.key[1])
    assert all(params.greedy for _, params in judge.requests)


def test_kill_and_resume_gives_the_uninterrupted_file(mmrole_reference, tmp_path):
    name = "human-role_test.json"
    answers_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, "yi-vl-6b", name, n=5)
    replies = _replies(_published(mmrole_reference, "yi-vl-6b", name))
    _review(answers_dir, tmp_path / "full", ReplayJudge(replies), image_dir)

    with pytest.raises(KeyboardInterrupt):
        _review(answers_dir, tmp_path / "resumed", ReplayJudge(replies, fail_after=13), image_dir)
    assert not (tmp_path / "resumed" / name).exists()
    journal = tmp_path / "resumed" / "human-role_test.journal.jsonl"
    assert len(journal.read_text().splitlines()) == 13
    with journal.open("a") as f:
        f.write('{"id": "torn')  # a kill in the middle of a write
    second = ReplayJudge(replies)
    _review(answers_dir, tmp_path / "resumed", second, image_dir)
    assert len(second.requests) == 5 * 8 - 13  # only what was not finished
    assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    # A third run finds everything done and rewrites the same file.
    third = ReplayJudge(replies)
    _review(answers_dir, tmp_path / "resumed", third, image_dir)
    assert third.requests == []
    assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_parse_failures_are_retried_with_sampling_then_reported(mmrole_reference, tmp_path):
    name = "comment_test.json"
    answers_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, "mmrole-agent", name, n=2)
    replies = _replies(_published(mmrole_reference, "mmrole-agent", name))
    first = json.loads((answers_dir / name).read_text())[0]["id"]
    good = replies[(first, "Fluency", NORMAL)]
    replies[(first, "Fluency", NORMAL)] = lambda attempt: "Both fine. Scores: nine and nine" if attempt < 3 else good
    replies[(first, "Coherency", NORMAL)] = lambda attempt: "[Scores]: (8, 9) [Scores]: (7, 9)"

    [summary] = _review(answers_dir, tmp_path / "r0", ReplayJudge(replies), image_dir)
    out = json.loads((tmp_path / "r0" / name).read_text())
    assert out[0]["rm_review"]["Fluency"] == {"review": "Both fine. Scores: nine and nine", "score": {}}
    assert {(p.sample_id, p.metric) for p in summary.failed} == {(first, "Fluency"), (first, "Coherency")}
    assert summary.done == 1

    judge = ReplayJudge(replies)
    [summary] = _review(answers_dir, tmp_path / "r3", judge, image_dir, parse_retries=2)
    out = json.loads((tmp_path / "r3" / name).read_text())
    assert out[0]["rm_review"]["Fluency"] == {"review": good, "score": list(_score(good))}
    assert out[0]["rm_review"]["Coherency"]["score"] == {}
    assert [(p.metric, "after 3 ask(s)" in p.message) for p in summary.failed] == [("Coherency", True)]
    retries = [(r.key[1], p) for r, p in judge.requests if r.key[0] == first and r.key[1] in ("Fluency", "Coherency")]
    assert [m for m, _ in retries] == ["Fluency", "Coherency"] * 3
    assert [p.greedy for _, p in retries] == [True, True, False, False, False, False]
    assert len({p.seed for _, p in retries[2:]}) == 2  # one fixed seed per attempt

    # Asking for more retries later continues where the journal stopped.
    judge = ReplayJudge(replies)
    _review(answers_dir, tmp_path / "r3", judge, image_dir, parse_retries=3)
    assert [r.key[1] for r, _ in judge.requests] == ["Coherency"]


def _score(review):
    from mmrole.common.metrics import parse_score_pair

    return parse_score_pair(review)


def test_bad_input_is_reported_and_skipped_the_rest_goes_on(mmrole_reference, tmp_path):
    name = "comment_test.json"

    def mutate(samples):
        del samples[0]["conversations"][1]["answer"]
        samples[1]["conversations"][1]["value"] = ""
        samples[2]["image"] = "nowhere/missing.jpg"
        samples[3]["conversations"][1]["answer"] = ""

    answers_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, "gpt-4-turbo", name, n=6, mutate=mutate)
    (image_dir / "nowhere" / "missing.jpg").unlink()
    (answers_dir / "broken.json").write_text("[{", encoding="utf-8")
    samples = json.loads((answers_dir / name).read_text())
    replies = _replies(_published(mmrole_reference, "gpt-4-turbo", name))
    replies[(samples[4]["id"], "Tone Consistency", NORMAL)] = None  # the API fails for good
    judge = ReplayJudge(replies)
    [broken, summary] = _review(answers_dir, tmp_path / "out", judge, image_dir)
    [problem] = broken.skipped
    assert problem.path.endswith("broken.json") and "malformed JSON at line 1" in problem.message
    assert not (tmp_path / "out" / "broken.json").exists()
    reasons = {p.sample_id: p.message for p in summary.skipped}
    assert "no answer (conversations[1].answer)" in reasons[samples[0]["id"]]
    assert "empty ground truth" in reasons[samples[1]["id"]]
    assert "image not found" in reasons[samples[2]["id"]] and "missing.jpg" in reasons[samples[2]["id"]]
    assert "empty answer" in reasons[samples[3]["id"]]
    [error] = summary.failed
    assert (error.sample_id, error.metric) == (samples[4]["id"], "Tone Consistency") and "HTTP 500" in error.message
    out = json.loads((tmp_path / "out" / name).read_text())
    assert [("rm_review" in s) for s in out] == [False, False, False, False, True, True]
    assert "Tone Consistency" not in out[4]["rm_review"] and len(out[5]["rm_review"]) == 8
    assert summary.done == 1
    # The next run asks only the failed request again.
    replies[(samples[4]["id"], "Tone Consistency", NORMAL)] = "Fine. [Scores]: (7, 8)"
    (answers_dir / "broken.json").unlink()
    judge = ReplayJudge(replies)
    [summary] = _review(answers_dir, tmp_path / "out", judge, image_dir)
    assert [r.key for r, _ in judge.requests] == [(samples[4]["id"], "Tone Consistency", NORMAL)]
    assert summary.done == 2 and summary.failed == []


def test_empty_answer_judge_policy_sends_it(mmrole_reference, tmp_path):
    name = "inter-role_test.json"
    answers_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, "yi-vl-6b", name)
    samples = json.loads((answers_dir / name).read_text())
    empty = next(s for s in samples if s["conversations"][1]["answer"] == "")
    answers_dir2 = tmp_path / "one"
    answers_dir2.mkdir()
    (answers_dir2 / name).write_text(json.dumps([empty]), encoding="utf-8")
    replies = {(empty["id"], m, NORMAL): "Model A said nothing. [Scores]: (1, 8)" for m in METRIC_NAMES}
    judge = ReplayJudge(replies)
    [summary] = _review(answers_dir2, tmp_path / "out", judge, image_dir, empty_answer="judge")
    assert len(judge.requests) == 8 and summary.skipped == [] and summary.done == 1
    assert "## **[Model A's Response Start]**\n\n\n\n## **[Model A's Response End]**" in judge.requests[0][0].query[1]["text"]
    out = json.loads((tmp_path / "out" / name).read_text())
    assert out[0]["rm_review"]["Fluency"]["score"] == [1.0, 8.0]


def test_swap_asks_both_orders_and_reports_position_bias(mmrole_reference, tmp_path):
    name = "comment_test.json"
    answers_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, "qwen-vl-chat", name, n=2)
    samples = json.loads((answers_dir / name).read_text())
    replies = {}
    # Normal order: (6, 8) and (8, 8); swapped (ground truth first): (9, 6) and (8, 8).
    for sample, normal, swapped in zip(samples, [(6, 8), (8, 8)], [(9, 6), (8, 8)]):
        for m in METRIC_NAMES:
            replies[(sample["id"], m, NORMAL)] = f"ok [Scores]: ({normal[0]}, {normal[1]})"
            replies[(sample["id"], m, SWAPPED)] = f"ok [Scores]: ({swapped[0]}, {swapped[1]})"
    judge = ReplayJudge(replies)
    [summary] = _review(answers_dir, tmp_path / "out", judge, image_dir, swap=True)
    assert len(judge.requests) == 2 * 8 * 2
    swapped_request = next(r for r, _ in judge.requests if r.key[2] == SWAPPED)
    text = swapped_request.query[1]["text"]
    gt, answer = samples[0]["conversations"][1]["value"], samples[0]["conversations"][1]["answer"]
    assert text.index(gt) < text.index("Model A's Response End") < text.index(answer)
    out = json.loads((tmp_path / "out" / name).read_text())
    assert out[0]["rm_review"]["Fluency"]["score"] == [6.0, 8.0]
    assert out[0]["rm_review_swapped"]["Fluency"]["score"] == [9.0, 6.0]
    rows = (tmp_path / "out" / "comment_test.position_bias.csv").read_text().splitlines()
    assert rows[0].startswith("metric,pairs,")
    metric, pairs, first, second, diff, flips = rows[1].split(",")
    # evaluated first: (6/8 + 8/8) / 2 = 0.875; second: (6/9 + 8/8) / 2 = 0.8333; winners differ nowhere.
    assert (metric, int(pairs)) == ("Instruction Adherence", 2)
    assert float(first) == pytest.approx(0.875) and float(second) == pytest.approx((6 / 9 + 1) / 2)
    assert float(flips) == 0.0
    assert any("position bias" in note for note in summary.notes)


def test_journal_results_of_another_judge_or_settings_are_refused_unless_redo_stale(mmrole_reference, tmp_path):
    name = "comment_test.json"
    answers_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, "mmrole-agent", name, n=2)
    replies = _replies(_published(mmrole_reference, "mmrole-agent", name))
    _review(answers_dir, tmp_path / "out", ReplayJudge(replies), image_dir)
    first = (tmp_path / "out" / name).read_bytes()
    journal = tmp_path / "out" / "comment_test.journal.jsonl"
    for judge, params, difference in (
        (ReplayJudge(replies, model="another-judge"), GenerationParams(greedy=True),
         "model 'replayed' -> now 'another-judge'"),
        (ReplayJudge(replies), GenerationParams(greedy=True, max_new_tokens=64), "max_new_tokens None -> now 64"),
        (ReplayJudge(replies), GenerationParams(temperature=0.7), "greedy True -> now False"),
    ):
        [summary] = _review(answers_dir, tmp_path / "out", judge, image_dir, params=params)
        assert judge.requests == [] and summary.unusable
        [problem] = summary.skipped
        assert problem.path == str(journal) and "16 result(s) here were made with other settings" in problem.message
        assert difference in problem.message and "--redo_stale" in problem.message
        assert (tmp_path / "out" / name).read_bytes() == first
    # Greedy ignores the seed: another --seed reuses the greedy results.
    judge = ReplayJudge(replies)
    _review(answers_dir, tmp_path / "out", judge, image_dir, params=GenerationParams(greedy=True, seed=99))
    assert judge.requests == []
    # --redo_stale: everything is asked again with the new settings, and said so.
    changed = {key: "Redone. [Scores]: (5, 10)" for key in replies}
    judge = ReplayJudge(changed, model="another-judge")
    [summary] = _review(answers_dir, tmp_path / "out", judge, image_dir, redo_stale=True)
    assert len(judge.requests) == 16 and not summary.unusable
    assert any("16 journal result(s) of other settings redone" in note for note in summary.notes)
    out = json.loads((tmp_path / "out" / name).read_text())
    assert [r["score"] for s in out for r in s["rm_review"].values()] == [[5.0, 10.0]] * 16
    # ... and from then on those are this judge's results: a plain rerun resumes with no request.
    judge = ReplayJudge(changed, model="another-judge")
    _review(answers_dir, tmp_path / "out", judge, image_dir)
    assert judge.requests == []


def test_an_edited_answer_is_reviewed_again_the_rest_reused(mmrole_reference, tmp_path):
    name = "inter-role_test.json"
    answers_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, "qwen-vl-chat", name, n=3)
    replies = _replies(_published(mmrole_reference, "qwen-vl-chat", name))
    _review(answers_dir, tmp_path / "out", ReplayJudge(replies), image_dir)
    samples = json.loads((answers_dir / name).read_text())
    samples[1]["conversations"][1]["answer"] = "A new answer from a rerun of inference."
    (answers_dir / name).write_text(json.dumps(samples, ensure_ascii=False, indent=4), encoding="utf-8")
    for metric in METRIC_NAMES:
        replies[(samples[1]["id"], metric, NORMAL)] = "Changed. [Scores]: (3, 9)"
    judge = ReplayJudge(replies)
    [summary] = _review(answers_dir, tmp_path / "out", judge, image_dir)
    assert sorted(r.key for r, _ in judge.requests) == sorted((samples[1]["id"], m, NORMAL) for m in METRIC_NAMES)
    assert all("A new answer from a rerun" in r.query[1]["text"] for r, _ in judge.requests)
    assert any(note.startswith("8 journal result(s) redone: their request changed") for note in summary.notes)
    out = json.loads((tmp_path / "out" / name).read_text())
    assert out[1]["rm_review"]["Fluency"] == {"review": "Changed. [Scores]: (3, 9)", "score": [3.0, 9.0]}
    published = _published(mmrole_reference, "qwen-vl-chat", name)
    assert out[0]["rm_review"] == published[0]["rm_review"] and out[2]["rm_review"] == published[2]["rm_review"]


def test_progress_bar_shows_count_rate_and_eta_on_stderr(mmrole_reference, tmp_path, capsys):
    import re

    name = "comment_test.json"
    answers_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, "mmrole-agent", name, n=2)
    replies = _replies(_published(mmrole_reference, "mmrole-agent", name))
    config = ReviewConfig(image_dir=str(image_dir), params=GenerationParams(greedy=True), progress=True)
    review_files(input_files(answers_dir, None), tmp_path / "out", ReplayJudge(replies), config)
    out, err = capsys.readouterr()
    assert out == ""  # bars never mix with stdout
    # tqdm's line: "<file>: 100%|...| 16/16 [elapsed<remaining, rate]", the rate in req/s or s/req.
    assert re.search(r"comment_test\.json: 100%\|.*\| 16/16 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(req/s|s/req)\]", err), err


def test_a_score_outside_0_to_10_is_not_a_score_and_is_asked_again(mmrole_reference, tmp_path):
    """(85, 8) parses, but no judge prompt allows it: the review is a failure (score {} in the output, listed),
    and --parse_retries asks again."""
    name = "comment_test.json"
    answers_dir, image_dir = answers_with_images(tmp_path, mmrole_reference, "mmrole-agent", name, n=1)
    reviews = _published(mmrole_reference, "mmrole-agent", name)[:1]
    replies = _replies(reviews)
    key = (reviews[0]["id"], "Fluency", NORMAL)
    good = replies[key]
    replies[key] = lambda attempt: "Fine. [Scores]: (85, 8)" if attempt == 1 else good
    judge = ReplayJudge(replies)
    [summary] = _review(answers_dir, tmp_path / "out", judge, image_dir)
    [failure] = summary.failed
    assert failure.metric == "Fluency" and failure.message == "score 85 outside 0..10 in the review after 1 ask(s)"
    out = json.loads((tmp_path / "out" / name).read_text(encoding="utf-8"))
    assert out[0]["rm_review"]["Fluency"] == {"review": "Fine. [Scores]: (85, 8)", "score": {}}
    [summary] = _review(answers_dir, tmp_path / "out", judge, image_dir, parse_retries=1)
    assert summary.failed == [] and summary.status == 0
    out = json.loads((tmp_path / "out" / name).read_text(encoding="utf-8"))
    assert out[0]["rm_review"]["Fluency"] == reviews[0]["rm_review"]["Fluency"]
