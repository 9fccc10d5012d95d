"""What a run that did not finish looks like (issue 13), for inference.py and the review scripts against the
local stub server: the exit-status contract (0 done, 1 a file or folder unusable, 2 usage, 3 items not
done), a refused key or unknown model stopping the run at once, keys never taken on the command line,
flags that would be ignored refused, bad records (duplicate ids, non-images, truncated JPEGs) found before
any request, and one clear line instead of a traceback for a damaged journal, an output folder that
cannot be used, a busy folder, a full disk."""

import io
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mmrole.common.prompts import ROLEPLAY_SYSTEM
from mmrole.common.store import FolderLock
from tests.support.openai_stub import Fault, OpenAIStub

from tests.support.scripts import REPO, load_script

GPT_review = load_script("eval/GPT_review.py")
RM_review = load_script("eval/RM_review.py")
inference = load_script("inference.py")

KEY = "sk-exit-0123456789abcdefSECRET"
NAME = "comment_test.json"


def png_bytes(colour=(10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def record(sample_id, question, image, answer=None):
    assistant = {"from": "assistant", "value": f"The ground truth of {sample_id}."}
    if answer is not None:
        assistant["answer"] = answer
    return {"id": sample_id, "system": ROLEPLAY_SYSTEM, "image": image,
            "conversations": [{"from": "user", "value": question}, assistant],
            "role": "Woody", "script": "Toy Story", "other_role": "a curious human"}


class Workspace:
    """Test files, images and the flags of one run against the stub."""

    def __init__(self, root: Path, stub: OpenAIStub):
        self.root, self.stub = root, stub
        self.inputs, self.images, self.out = root / "inputs", root / "images", root / "out"
        self.inputs.mkdir()
        self.images.mkdir()

    def write(self, records, name=NAME):
        (self.inputs / name).write_text(json.dumps(records, ensure_ascii=False, indent=4), encoding="utf-8")
        for r in records:
            path = self.images / r["image"]
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(png_bytes())
        return records

    def samples(self, n, name=NAME, answer=False):
        return self.write([record(f"s{i}", f"Question {i}?", f"img/{i}.png", f"Answer {i}." if answer else None)
                           for i in range(n)], name)

    def args(self, *extra, output=None):
        return ["--backend", "openai", "--model", "m", "--base_url", self.stub.base_url, "--api_key_env", "EXIT_KEY",
                "--image_dir", str(self.images), "--input_dir", str(self.inputs), "--output_dir",
                str(output or self.out), "--no_progress", "--max_attempts", "1", *extra]

    def output(self, name=NAME):
        return json.loads((self.out / name).read_text(encoding="utf-8"))


def judge_reply(request) -> str:
    return "Both answers are fine. [Scores]: (7, 8)" if "[Scores]" in request.user_text or "Model A" in request.user_text \
        else f"echo: {request.user_text}"


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("EXIT_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with OpenAIStub(judge_reply) as stub:
        yield Workspace(tmp_path, stub)


def error_lines(text):
    return [line for line in text.splitlines() if line.startswith("error:")]


# --- exit status ----------------------------------------------------------------------------------

def test_endpoint_down_is_exit_3_listing_each_sample_and_a_rerun_finishes(work, capsys):
    work.samples(3)
    work.stub.fail_when(lambda r: True, Fault.SERVER_ERROR, times=3)
    assert inference.main(work.args()) == 3
    err = capsys.readouterr().err
    assert all(f"sample s{i}: no answer: HTTP 500" in err for i in range(3))
    assert "0 samples done, 0 skipped, 3 failed" in err and "exit status 3" in err
    assert all("answer" not in r["conversations"][1] for r in work.output())
    assert inference.main(work.args()) == 0  # the rerun asks the failed samples again
    assert [r["conversations"][1]["answer"] for r in work.output()] == [f"echo: Question {i}?" for i in range(3)]


@pytest.mark.parametrize("script", [inference, GPT_review])
@pytest.mark.parametrize("fault, status, hint", [(Fault.UNAUTHORIZED, "HTTP 401", "check the key in $EXIT_KEY"),
                                                 (Fault.FORBIDDEN, "HTTP 403", "check the key in $EXIT_KEY"),
                                                 (Fault.UNKNOWN_MODEL, "HTTP 404", "check --model 'm'")])
def test_a_refused_key_or_unknown_model_stops_the_run_at_once(work, capsys, script, fault, status, hint):
    """12 samples (96 reviews): one message, exit status 2, at most the requests in flight (--concurrency 2)."""
    work.samples(12, answer=script is GPT_review)
    work.stub.fail_when(lambda r: True, fault, times=10_000)
    assert script.main(work.args("--concurrency", "2", "--max_attempts", "5")) == 2
    err = capsys.readouterr().err
    assert 1 <= len(work.stub.completion_requests) <= 2
    [line] = error_lines(err)
    assert status in line and hint in line and "stopped at once" in line
    assert "no answer" not in err and "API error" not in err and "retrying" not in err  # nothing per item
    assert KEY not in err and "0123456789abcdef" not in err  # the 401 quoted the key: not passed on


def test_a_key_on_the_command_line_is_refused_without_repeating_it(work, capsys):
    work.samples(1)
    for argv in (["--api_key", KEY], [f"--api_key={KEY}"], ["--api-key", KEY], ["--api_key_env", KEY],
                 ["--model", KEY]):
        with pytest.raises(SystemExit) as exit_:
            inference.main(work.args(*argv))
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "key" in err.lower() and KEY not in err and "0123456789abcdef" not in err, argv
    assert work.stub.completion_requests == []


@pytest.mark.parametrize("argv, message", [
    (["--api_key_e", "OTHER_KEY"], "API keys are not taken on the command line"),  # never read as --api_key_env
    (["--input_di", "x"], "unrecognized arguments"),  # no prefix matching
    (["--concurren", "3"], "unrecognized arguments"),
    (["--batch_size", "4"], "--batch_size applies to --backend hf or transformers only"),
    (["--use_lora"], "--use_lora applies to --backend hf only"),
    (["--model_path", "x"], "--model_path applies to --backend hf or transformers only"),
    (["--no_random", "--temperature", "0.9"], "--temperature has no effect with --no_random"),
    (["--no_random", "--top_p", "0.5"], "--top_p has no effect with --no_random"),
    (["--concurrency", "0"], "must be at least 1"),
])
def test_flags_that_would_be_ignored_or_misread_are_a_usage_error(work, capsys, argv, message):
    work.samples(1)
    with pytest.raises(SystemExit) as exit_:
        inference.main(work.args(*argv))
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert work.stub.completion_requests == []


def test_hf_refuses_openai_flags_and_review_keeps_sampling_flags_for_its_retries(work, capsys):
    with pytest.raises(SystemExit) as exit_:
        RM_review.main(["--base_url", "http://x/v1", "--input_dir", str(work.inputs)])
    assert exit_.value.code == 2 and "--base_url applies to --backend openai only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        GPT_review.main(work.args("--no_random", "--temperature", "0.7"))
    assert exit_.value.code == 2 and "--temperature has no effect" in capsys.readouterr().err
    work.samples(1, answer=True)  # with --parse_retries the retries sample, with this temperature
    assert GPT_review.main(work.args("--no_random", "--temperature", "0.7", "--parse_retries", "1")) == 0


def test_negative_parse_retries_is_a_usage_error(work, capsys):
    with pytest.raises(SystemExit) as exit_:
        GPT_review.main(work.args("--parse_retries", "-1"))
    assert exit_.value.code == 2 and "--parse_retries: must be at least 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("script", [inference, GPT_review])
def test_an_empty_input_folder_is_exit_2(work, capsys, script):
    assert script.main(work.args()) == 2
    assert "no *.json files here: nothing to do" in capsys.readouterr().err
    assert not work.out.exists()


# --- bad records ------------------------------------------------------------------------------------

def test_duplicate_ids_are_reported_and_never_get_another_records_answer(work, capsys):
    work.write([record("x", "First question?", "img/0.png"), record("x", "Second question?", "img/1.png"),
                record("y", "Third question?", "img/2.png")])
    assert inference.main(work.args()) == 3
    err = capsys.readouterr().err
    assert f"{work.inputs / NAME}: sample x: duplicate sample id (record #1" in err
    out = work.output()
    assert out[0]["conversations"][1]["answer"] == "echo: First question?"
    assert "answer" not in out[1]["conversations"][1]  # not the first record's answer
    assert out[2]["conversations"][1]["answer"] == "echo: Third question?"
    assert sorted(r.user_text for r in work.stub.completion_requests) == ["First question?", "Third question?"]


def test_review_of_duplicate_ids_gives_the_second_record_nothing(work, capsys):
    work.write([record("x", "Q1?", "img/0.png", "A1."), record("x", "Q2?", "img/1.png", "A2."),
                record("y", "Q3?", "img/2.png", "A3.")])
    assert GPT_review.main(work.args()) == 3
    out = work.output()
    assert len(out[0]["rm_review"]) == 8 and "rm_review" not in out[1] and len(out[2]["rm_review"]) == 8
    assert len(work.stub.completion_requests) == 16
    assert "sample x: duplicate sample id" in capsys.readouterr().err


@pytest.mark.parametrize("script", [inference, GPT_review])
def test_non_images_and_truncated_jpegs_are_found_before_any_request(work, capsys, script):
    records = work.samples(3, answer=script is GPT_review)
    (work.images / "img/0.png").write_text("this is a text file, not a picture", encoding="utf-8")
    records[1]["image"] = "img/1.jpg"
    work.write(records)
    (work.images / "img/1.jpg").write_bytes(jpeg_bytes()[:700])  # cut in the middle of the scan
    assert script.main(work.args()) == 3
    err = capsys.readouterr().err
    assert f"{work.inputs / NAME}: sample s0: not an image (no image format recognised in its bytes): " \
           f"{work.images / 'img/0.png'}" in err
    assert f"{work.inputs / NAME}: sample s1: damaged image (image file is truncated" in err
    assert str(work.images / "img/1.jpg") in err
    per_sample = 8 if script is GPT_review else 1
    assert len(work.stub.completion_requests) == per_sample  # only the good sample was asked
    assert all(r.user_text.find("s0") == -1 for r in work.stub.completion_requests)


def test_empty_answers_stay_a_deliberate_listed_skip_with_exit_0(work, capsys):
    records = work.samples(2, answer=True)
    records[1]["conversations"][1]["answer"] = ""
    work.write(records)
    assert GPT_review.main(work.args()) == 0
    err = capsys.readouterr().err
    assert "left out (as the original): 1" in err and "sample s1: empty answer: not reviewed" in err


def test_retry_warnings_name_the_sample_not_a_call_index(work, caplog):
    work.samples(2, answer=True)
    target = "s1"
    work.stub.fail_when(lambda r: "Question 1?" in r.user_text and "Fluency" in r.user_text, Fault.SERVER_ERROR)
    with caplog.at_level("WARNING", logger="mmrole.backends.client"):
        assert GPT_review.main(work.args("--max_attempts", "2")) == 0
    [warning] = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert warning.startswith(f"sample {target} [Fluency, AB]: attempt 1/2 failed (HTTP 500")
    assert "call " not in warning


# --- one clear line instead of a traceback ----------------------------------------------------------

def test_a_damaged_journal_line_refuses_that_file_and_the_others_go_on(work, capsys):
    work.samples(2, name="a_test.json")
    work.samples(2, name="b_test.json")
    assert inference.main(work.args()) == 0
    journal = work.out / "a_test.journal.jsonl"
    lines = journal.read_text(encoding="utf-8").splitlines()
    journal.write_text("\n".join([lines[0], "{damaged", lines[1]]) + "\n", encoding="utf-8")
    (work.out / "a_test.json").unlink()
    (work.out / "b_test.json").unlink()
    work.stub.clear()
    assert inference.main(work.args()) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{journal}: file skipped: line 2 is damaged" in err and "repair or delete that line" in err
    assert (work.out / "b_test.json").exists() and not (work.out / "a_test.json").exists()
    assert work.stub.completion_requests == []  # b's answers were in its journal


def test_output_dir_naming_a_file_is_one_line_before_any_request(work, capsys):
    work.samples(1)
    work.out.write_text("not a folder")
    assert inference.main(work.args()) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [f"error: output folder {work.out}: it is a file, not a folder"]
    assert work.stub.completion_requests == []


def _without_root_override():
    """The command prefix under which permission bits bind this process too (root ignores them)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a folder cannot be made unwritable for this process")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_an_unwritable_output_folder_is_found_before_the_first_request(work):
    work.samples(3)
    work.out.mkdir()
    work.out.chmod(0o555)
    try:
        result = subprocess.run([*_without_root_override(), sys.executable, str(REPO / "inference.py"), *work.args()],
                                capture_output=True, text=True, timeout=120, env=dict(os.environ))
    finally:
        work.out.chmod(0o755)
    assert result.returncode == 1, result.stderr
    assert error_lines(result.stderr) == [f"error: output folder {work.out}: cannot write in it: Permission denied"]
    assert "Traceback" not in result.stderr
    assert work.stub.completion_requests == []


@pytest.mark.slow  # subprocesses under a file-size limit
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(work):
    """A real write failure: the process may write files of at most 3000 bytes (RLIMIT_FSIZE; Python ignores
    SIGXFSZ, so the write fails with EFBIG as it would with ENOSPC on a full disk). The journal grows past it
    within the run: the failed append leaves no partial line, no temporary file stays, and the rerun
    finishes with the file an undisturbed run writes."""
    work.samples(30, answer=True)
    limit = 3000

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    result = subprocess.run([sys.executable, str(REPO / "eval" / "GPT_review.py"), *work.args("--concurrency", "1")],
                            capture_output=True, text=True, timeout=300, preexec_fn=limited, env=dict(os.environ))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert f"cannot write {work.out / 'comment_test.journal.jsonl'}: File too large" in line
    assert "nothing was left half-written" in line
    journal = (work.out / "comment_test.journal.jsonl").read_text(encoding="utf-8")
    assert journal.endswith("\n") and all(json.loads(entry) for entry in journal.splitlines())
    assert not list(work.out.glob(".*.tmp")) and not (work.out / NAME).exists()
    assert GPT_review.main(work.args()) == 0
    assert GPT_review.main(work.args(output=work.root / "undisturbed")) == 0
    assert (work.out / NAME).read_bytes() == (work.root / "undisturbed" / NAME).read_bytes()


# --- one run per output folder ----------------------------------------------------------------------

def test_a_second_run_on_the_same_folder_refuses_and_names_the_holder(work, capsys):
    work.samples(2)
    work.out.mkdir()
    with FolderLock(work.out):
        assert inference.main(work.args()) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert f"error: output folder {work.out}: another run is using it (pid {os.getpid()} on host " \
           f"{socket.gethostname()}" in line
    assert work.stub.completion_requests == []
    assert inference.main(work.args()) == 0  # released: the next run goes ahead


def test_the_lock_of_a_killed_run_is_taken_over(work, capsys):
    work.samples(1)
    work.out.mkdir()
    code = f"import os, signal; from mmrole.common.store import FolderLock; FolderLock({str(work.out)!r}).acquire(); " \
           "os.kill(os.getpid(), signal.SIGKILL)"
    killed = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    holder = json.loads((work.out / ".mmrole.lock").read_text())
    assert inference.main(work.args()) == 0
    err = capsys.readouterr().err
    assert f"took over the lock of a run that ended without releasing it (pid {holder['pid']}" in err
    assert not (work.out / ".mmrole.lock").exists()  # released at the end


def test_temporary_files_of_killed_writes_are_removed_and_only_those(work, capsys):
    work.samples(1)
    work.out.mkdir()
    ours = [work.out / ".comment_test.json.k3x_9a0q.tmp", work.out / ".comment_test.journal.jsonl.abcdefgh.tmp"]
    not_ours = [work.out / ".notes.tmp", work.out / "draft.tmp", work.out / ".comment_test.json.ABCDEFGH.tmp",
                work.out / ".comment_test.json.short.tmp"]
    for path in ours + not_ours:
        path.write_bytes(b"x" * 100)
    assert inference.main(work.args()) == 0
    assert not any(p.exists() for p in ours) and all(p.exists() for p in not_ours)
    assert "removed 2 temporary file(s) left by killed writes (200 bytes)" in capsys.readouterr().err


# --- every parser ---------------------------------------------------------------------------------

SCRIPTS = ("inference.py", "eval/GPT_review.py", "eval/RM_review.py", "eval/RM_result.py", "eval/report.py",
           "eval/build_RM_data.py", "eval/RM_agreement.py", "data_prep/build_data.py", "data_prep/filter_dialogues.py",
           "data_prep/gen_profiles.py", "data_prep/gen_dialogues.py", "finetune/merge_lora.py", "app.py")


def _script_mains():
    from mmrole.demo import data as demo_data, judge as demo_judge, summary as demo_summary, tiny

    mains = {path: load_script(path).main for path in SCRIPTS}
    mains.update({"mmrole.tiny": tiny.main, "mmrole.demo.data": demo_data.main, "mmrole.demo.judge": demo_judge.main,
                  "mmrole.demo.summary": demo_summary.main})
    return mains


@pytest.mark.parametrize("argv", [["--api_key", KEY], [f"--openai-api-key={KEY}"], ["--token", KEY], [KEY]])
def test_every_script_refuses_a_key_on_the_command_line_without_repeating_it(capsys, argv):
    for name, main in _script_mains().items():
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, name
        err = capsys.readouterr().err
        assert "key" in err.lower() and KEY not in err and "0123456789abcdef" not in err, name


def test_finetune_refuses_unknown_and_shortened_flags_without_repeating_a_key(capsys):
    from mmrole.finetune.train import parse_arguments

    for argv in (["--api_key", KEY], ["--model_name", "m", "--data_path", "d", "--output_dir", "o"]):
        with pytest.raises(SystemExit) as exit_:
            parse_arguments(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "unrecognized arguments" in err and KEY not in err and "0123456789abcdef" not in err


def test_every_argparse_parser_has_prefix_matching_off():
    """Each ArgumentParser of the project is mmrole.common.cli's (allow_abbrev=False) or says allow_abbrev=False."""
    import ast

    checked = 0
    for path in sorted(REPO.rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith(("tests/", ".")):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        shared = any(isinstance(node, ast.ImportFrom) and node.module in ("mmrole.common.cli", "common.cli", "cli")
                     and any(alias.name == "ArgumentParser" for alias in node.names) for node in ast.walk(tree))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if not name.endswith("ArgumentParser") or relative == "mmrole/common/cli.py" and name == "ArgumentParser":
                continue
            checked += 1
            off = any(k.arg == "allow_abbrev" and isinstance(k.value, ast.Constant) and k.value.value is False
                      for k in node.keywords)
            assert off or (isinstance(node.func, ast.Name) and name == "ArgumentParser" and shared), \
                f"{relative}:{node.lineno}: an ArgumentParser with prefix matching on"
    assert checked >= 15
