"""bench/full_eval.py: one model's whole evaluation (answers, then 8 reviews per answer), smoke-run on the tiny
reference checkpoint with the published-length stop rule; a rerun on the same output folder resumes."""

import re
import subprocess
import sys

import pytest

from tests.support.scripts import REPO


def _run(*args):
    return subprocess.run([sys.executable, str(REPO / "bench" / "full_eval.py"), *args], capture_output=True,
                          text=True, timeout=900)


def _figures(stdout, stage):
    """(made, wanted, generated tokens, prefill tokens computed, naive prefill tokens) of a stage's lines."""
    block = stdout[stdout.index(f"{stage}: "):]
    made, wanted = map(int, re.match(rf"{stage}: (\d+)/(\d+) ", block).groups())
    generated = int(re.search(r"generated ([\d,]+) tokens", block).group(1).replace(",", ""))
    computed, naive = (int(n.replace(",", "")) for n in
                       re.search(r"prefill tokens computed ([\d,]+) of ([\d,]+) naive", block).groups())
    return made, wanted, generated, computed, naive


@pytest.mark.slow  # four checkpoint loads and 18 generations: ~2 minutes on 2 busy cores
def test_full_eval_runs_both_stages_shares_review_prefixes_and_resumes(qwen_reference, mmrole_reference, tmp_path):
    out = tmp_path / "eval"
    first = _run("--samples", "1", "--published_lengths", "--max_new_tokens", "4", "--output_dir", str(out))
    assert first.returncode == 0, first.stderr[-2000:]
    answers = _figures(first.stdout, "answers")
    reviews = _figures(first.stdout, "reviews")
    assert answers[:2] == (1, 1) and 1 <= answers[2] <= 4
    assert reviews[:2] == (8, 8) and 8 <= reviews[2] <= 32
    assert reviews[3] < reviews[4] / 3  # the 8 review prompts share all but their aspect sentence
    assert "time in prefill" in first.stdout and "decoding" in first.stdout
    assert (out / "reviews").is_dir() and list((out / "reviews").glob("*.json"))

    again = _run("--samples", "1", "--published_lengths", "--max_new_tokens", "4", "--output_dir", str(out))
    assert again.returncode == 0, again.stderr[-2000:]
    assert _figures(again.stdout, "answers")[:3] == (1, 1, 0)  # nothing generated again
    assert _figures(again.stdout, "reviews")[:3] == (8, 8, 0)


@pytest.mark.parametrize("args, message", [
    (["--test_dir", "somewhere"], "--test_dir and --image_dir go together"),
    (["--batch_size", "0"], "--batch_size must be at least 1"),
])
def test_full_eval_refuses_bad_arguments_in_one_line(args, message):
    result = _run(*args)
    assert result.returncode == 2 and message in result.stderr
