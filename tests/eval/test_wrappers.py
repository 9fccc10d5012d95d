"""The shell wrappers (inference.sh, eval/*.sh) pass names and flags where they belong: run with a fake
interpreter as $PYTHON that records its arguments instead of running anything (a wrapper that ran anything
but $PYTHON would run the real scripts and record nothing)."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE_PYTHON = """#!/bin/sh
call=$(grep -c '^----$' "$CALLS")
for arg in "$@"; do printf '%s\\n' "$arg" >> "$CALLS"; done
printf '%s\\n' '----' >> "$CALLS"
code=$(echo "${FAKE_EXITS:-}" | cut -s -d' ' -f$((call + 1)))
exit "${code:-${FAKE_EXIT:-0}}"
"""


@pytest.fixture()
def run_wrapper(tmp_path):
    """run_wrapper("inference.sh", *args) -> (returncode, stderr, [argv of each python call])."""
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(FAKE_PYTHON)
    fake_python.chmod(0o755)
    for split in ("in", "out"):  # RM_result.sh only runs for review folders that exist
        for model in ("m7", "mmrole-agent"):
            (tmp_path / "eval" / f"{split}-test_reviews" / model).mkdir(parents=True)
    calls = tmp_path / "calls.txt"

    def run(script, *args, exit_code=0, exit_codes=()):
        calls.write_text("")
        env = dict(os.environ, PYTHON=str(fake_python), CALLS=str(calls),
                   FAKE_EXIT=str(exit_code), FAKE_EXITS=" ".join(map(str, exit_codes)))
        proc = subprocess.run(["bash", str(REPO / script), *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        argvs = [block.strip("\n").split("\n") for block in calls.read_text().split("----\n") if block.strip()]
        return proc.returncode, proc.stderr, argvs

    return run


def _flag(argv, name):
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("args, model, model_path, extra", [
    (("mmrole-agent", "--", "--no_random"), "mmrole-agent", None, ["--no_random"]),
    (("--", "--no_random"), "mmrole-agent", None, ["--no_random"]),
    (("--no_random", "--batch_size", "4"), "mmrole-agent", None, ["--no_random", "--batch_size", "4"]),
    (("m7", "ckpt/M7", "--", "--use_lora"), "m7", "ckpt/M7", ["--use_lora"]),
    # no --model_path for an API model: inference.py refuses it with --backend openai
    (("gpt-4-turbo", "--", "--backend", "openai"), "gpt-4-turbo", None, ["--backend", "openai"]),
    (("gpt-4-turbo", "", "--", "--backend", "openai"), "gpt-4-turbo", None, ["--backend", "openai"]),
    ((), "mmrole-agent", None, []),
])
def test_inference_sh_takes_names_only_up_to_the_flags(run_wrapper, args, model, model_path, extra):
    """MODEL_PATH reaches --model_path only when given (inference.py's default is model_weights/MMRole-Agent)."""
    code, err, argvs = run_wrapper("inference.sh", *args)
    assert code == 0, err
    path_flag = ["--model_path", model_path] if model_path else []
    assert argvs == [["inference.py", *path_flag, "--input_dir", f"data/test/{data}",
                      "--output_dir", f"eval/{split}-test_answers/{model}", *extra]
                     for data, split in (("in-distribution", "in"), ("out-of-distribution", "out"))]


def test_inference_sh_refuses_a_third_name(run_wrapper):
    code, err, argvs = run_wrapper("inference.sh", "m7", "ckpt", "stray")
    assert code == 2 and "at most 2 name(s)" in err and argvs == []


@pytest.mark.parametrize("script, program, output", [
    ("eval/RM_review.sh", "eval/RM_review.py", "eval/{split}-test_reviews/{model}"),
    ("eval/GPT_review.sh", "eval/GPT_review.py", "eval/{split}-test_gpt_reviews/{model}"),
    ("eval/RM_result.sh", "eval/RM_result.py", "eval/{split}-test_results/{model}"),
])
@pytest.mark.parametrize("args, model, extra", [
    (("m7", "--", "--no_progress"), "m7", ["--no_progress"]),
    (("m7", "--no_progress"), "m7", ["--no_progress"]),
    (("--", "--no_progress"), "mmrole-agent", ["--no_progress"]),
    (("--no_progress",), "mmrole-agent", ["--no_progress"]),
])
def test_eval_wrappers_take_the_model_name_only_before_the_flags(run_wrapper, script, program, output, args, model, extra):
    code, err, argvs = run_wrapper(script, *args)
    assert code == 0, err
    assert len(argvs) == 2
    for argv, split in zip(argvs, ("in", "out")):
        assert argv[0] == program
        assert _flag(argv, "--output_dir") == output.format(split=split, model=model)
        assert argv[-1:] == extra and "--" not in argv


def test_report_sh_models_then_flags(run_wrapper):
    code, err, [argv] = run_wrapper("eval/report.sh", "a", "b", "--", "--aggregation", "samples")
    assert code == 0, err
    assert argv[argv.index("--models") + 1: argv.index("--output_dir")] == ["a", "b"]
    assert argv[-2:] == ["--aggregation", "samples"]
    code, err, [argv] = run_wrapper("eval/report.sh", "--aggregation", "samples")
    assert argv[argv.index("--models") + 1: argv.index("--output_dir")][-1] == "mmrole-agent"
    assert argv[-2:] == ["--aggregation", "samples"]


@pytest.mark.parametrize("script", ["inference.sh", "eval/RM_review.sh", "eval/GPT_review.sh", "eval/RM_result.sh"])
def test_a_failing_split_does_not_stop_the_other(run_wrapper, script):
    """A script exits 1 when some file could not be used; the Out-Test split must still run."""
    code, err, argvs = run_wrapper(script, "m7", exit_code=1)
    assert code == 1
    assert [any("/in-test_" in a or "in-distribution" in a for a in argv) for argv in argvs] == [True, False]
    assert any("/out-test_" in a or "out-of-distribution" in a for a in argvs[1])


@pytest.mark.parametrize("script", ["inference.sh", "eval/RM_review.sh", "eval/GPT_review.sh", "eval/RM_result.sh"])
@pytest.mark.parametrize("codes, worst", [((3, 0), 3), ((0, 3), 3), ((1, 3), 1), ((3, 1), 1), ((2, 1), 2),
                                          ((3, 2), 2), ((0, 0), 0), ((0, 137), 137)])
def test_two_splits_report_the_worst_status(run_wrapper, script, codes, worst):
    """The exit-status contract's order: 2 (usage) > 1 (a file unusable) > 3 (items not done) > 0; a crash
    or a signal (e.g. 137) is worse than all of them. Both splits run whatever the first one returns."""
    code, err, argvs = run_wrapper(script, "m7", exit_codes=codes)
    assert len(argvs) == 2
    assert code == worst
