"""GPT_review.py / RM_review.py --backend openai end to end against the local stub server, which
serves the genuine published reviews as the judge's replies."""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from mmrole.common.metrics import METRIC_NAMES
from mmrole.common.prompts import EVALUATOR_SYSTEM, judge_prompt
from tests.support.openai_stub import Fault, OpenAIStub

from tests.support.scripts import load_script

GPT_review = load_script("eval/GPT_review.py")
RM_result = load_script("eval/RM_result.py")

MODEL, NAME = "qwen-vl-chat", "inter-role_test.json"
SECRET = "sk-test-0123456789abcdef"


def _prompt(sample, metric):
    turn = sample["conversations"][1]
    return judge_prompt(question=sample["conversations"][0]["value"], answer_a=turn["answer"],
                        answer_b=turn["value"], role=sample["role"], script=sample["script"],
                        other_role=sample["other_role"], metric=metric)


@pytest.fixture()
def setup(mmrole_reference, tmp_path, monkeypatch):
    """4 answers + one small distinct PNG per image; the stub replies with the published review
    of the (exact) prompt it receives and fails loudly on any other prompt."""
    answers = json.loads((mmrole_reference / "in-test_answers" / MODEL / NAME).read_text(encoding="utf-8"))[:4]
    reviews = json.loads((mmrole_reference / "in-test_reviews" / MODEL / NAME).read_text(encoding="utf-8"))[:4]
    (tmp_path / "answers").mkdir()
    (tmp_path / "answers" / NAME).write_text(json.dumps(answers, ensure_ascii=False, indent=4), encoding="utf-8")
    for i, sample in enumerate(answers):
        path = tmp_path / "images" / sample["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (10 * i, 20, 30)).save(path, format="PNG")
    replies = {_prompt(s, m): s["rm_review"][m]["review"] for s in reviews for m in METRIC_NAMES}

    def responder(request):
        return replies[request.user_text]  # KeyError -> HTTP 500: a wrong prompt cannot pass

    monkeypatch.setenv("JUDGE_KEY", SECRET)
    with OpenAIStub(responder) as stub:
        yield stub, tmp_path, answers, reviews


def _args(stub, tmp_path, *extra):
    return ["--base_url", stub.base_url, "--api_key_env", "JUDGE_KEY", "--model", "gpt-4-turbo", "--no_random",
            "--image_dir", str(tmp_path / "images"), "--input_dir", str(tmp_path / "answers"),
            "--output_dir", str(tmp_path / "reviews"), "--no_progress", "--concurrency", "3", *extra]


def test_published_reviews_come_back_and_the_server_saw_the_protocol(setup, capsys):
    stub, tmp_path, answers, reviews = setup
    assert GPT_review.main(_args(stub, tmp_path)) == 0
    out = json.loads((tmp_path / "reviews" / NAME).read_text(encoding="utf-8"))
    assert out == reviews
    assert len(stub.completion_requests) == 4 * 8
    for sample in answers:
        png = (tmp_path / "images" / sample["image"]).read_bytes()
        for metric in METRIC_NAMES:
            [request] = [r for r in stub.completion_requests if r.user_text == _prompt(sample, metric)]
            assert request.system_prompt == EVALUATOR_SYSTEM
            assert request.body["temperature"] == 0.0 and request.model == "gpt-4-turbo"
            [url] = request.image_urls
            assert base64.b64decode(url.split(",", 1)[1]) == png
            content = request.messages[-1]["content"]
            assert [part["type"] for part in content] == ["image_url", "text"]  # image first, as the original
            assert request.authorization == f"Bearer {SECRET}"
    assert all("seed" not in r.body for r in stub.completion_requests)  # not asked for: not sent
    err = capsys.readouterr().err
    assert "API usage: 32 calls" in err
    for path in (tmp_path / "reviews").iterdir():
        assert SECRET not in path.read_text(encoding="utf-8")
    assert SECRET not in err
    # The reviews feed RM_result as the published ones do.
    assert RM_result.main(["--input_dir", str(tmp_path / "reviews"), "--output_dir", str(tmp_path / "res")]) == 0


def test_api_failure_is_reported_skipped_and_retried_by_the_next_run(setup, capsys):
    stub, tmp_path, answers, reviews = setup
    target = _prompt(answers[2], "Knowledge Consistency")
    stub.fail_when(lambda r: r.user_text == target, Fault.SERVER_ERROR, times=2)
    stub.fail_when(lambda r: r.user_text == _prompt(answers[0], "Fluency"), Fault.TRUNCATED, times=1)
    assert GPT_review.main(_args(stub, tmp_path, "--max_attempts", "2")) == 3  # finished, one review failed
    err = capsys.readouterr().err
    assert f"sample {answers[2]['id']} [Knowledge Consistency]: API error: HTTP 500" in err
    assert SECRET not in err
    out = json.loads((tmp_path / "reviews" / NAME).read_text(encoding="utf-8"))
    assert "Knowledge Consistency" not in out[2]["rm_review"]
    assert out[0] == reviews[0]  # the truncated body was retried by the client
    stub.clear()
    assert GPT_review.main(_args(stub, tmp_path, "--max_attempts", "2", "--seed", "77")) == 0
    assert [r.user_text for r in stub.completion_requests] == [target]
    assert stub.completion_requests[0].body["seed"] == 77  # asked for: sent
    assert json.loads((tmp_path / "reviews" / NAME).read_text(encoding="utf-8")) == reviews


def test_sigkilled_run_resumes_sending_only_the_missing_requests(setup, repo_root):
    """A real kill: GPT_review.py runs as a process and gets SIGKILL once 10 reviews are in its
    journal (the stub holds every later reply back, so exactly 10 are). The rerun sends only the
    22 requests without a journal entry, each once, and writes what an uninterrupted run writes."""
    stub, tmp_path, answers, reviews = setup
    assert GPT_review.main(_args(stub, tmp_path)) == 0  # the uninterrupted run, for comparison
    uninterrupted = (tmp_path / "reviews" / NAME).read_bytes()
    stub.clear()

    kill_after, replied, gate = 10, [], threading.Event()
    answer = stub.responder

    def held_back_after_ten(request):
        with lock:
            replied.append(request.user_text)
            hold = len(replied) > kill_after
        if hold:
            gate.wait(timeout=60)  # the client is killed meanwhile; nobody reads this reply
        return answer(request)

    lock = threading.Lock()
    stub.responder = held_back_after_ten
    args = _args(stub, tmp_path)
    args[args.index("--output_dir") + 1] = str(tmp_path / "killed")
    journal = tmp_path / "killed" / f"{Path(NAME).stem}.journal.jsonl"
    process = subprocess.Popen([sys.executable, str(repo_root / "eval" / "GPT_review.py"), *args],
                               cwd=tmp_path, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (journal.exists() and len(journal.read_text().splitlines()) >= kill_after):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the journal never reached 10 entries"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        gate.set()
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / NAME).exists()  # the output is only written when the file is done
    done = {_prompt(answers[[a["id"] for a in answers].index(entry["id"])], entry["metric"])
            for entry in map(json.loads, journal.read_text().splitlines())}
    assert len(done) == kill_after

    stub.clear()
    stub.responder = answer
    assert GPT_review.main(args) == 0
    sent = [r.user_text for r in stub.completion_requests]
    everything = {_prompt(sample, metric) for sample in answers for metric in METRIC_NAMES}
    assert len(sent) == len(set(sent)) == 4 * 8 - kill_after and set(sent) == everything - done
    assert (tmp_path / "killed" / NAME).read_bytes() == uninterrupted
    assert json.loads(uninterrupted) == reviews


def test_missing_key_for_the_public_api_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    (tmp_path / "answers").mkdir()
    (tmp_path / "answers" / "comment_test.json").write_text("[]", encoding="utf-8")
    assert GPT_review.main(["--api_key_env", "NO_SUCH_KEY", "--input_dir", str(tmp_path / "answers"),
                            "--output_dir", str(tmp_path / "o")]) == 2
    assert "NO_SUCH_KEY" in capsys.readouterr().err
