"""demo.sh end to end in its quick variant (DEMO_QUICK=1): the same scripts as the full demo with fewer
samples and steps. Checks what each stage must leave behind, not the (tiny, briefly trained) model's quality."""

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from mmrole.common.metrics import METRIC_NAMES, parse_score_pair

REPO = Path(__file__).resolve().parents[2]


def _run_demo(output: Path, **env):
    environment = {**os.environ, "DEMO_QUICK": "1", "DEMO_OUTPUT": str(output), "DEMO_SKIP_SETUP": "1", **env}
    return subprocess.run(["bash", str(REPO / "demo.sh")], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=900)


def test_demo_refuses_an_output_folder_it_did_not_make(tmp_path):
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = _run_demo(foreign)
    assert result.returncode != 0 and "not made by demo.sh" in result.stderr
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo") / "out"
    result = _run_demo(output)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return output, result.stdout


@pytest.mark.slow  # the quick demo end to end: a few minutes on 2 cores
def test_quick_demo_leaves_each_stages_output(quick_demo):
    output, _ = quick_demo
    for checkpoint in ("demo-agent", "demo-RM"):
        assert (output / "checkpoints" / checkpoint / "config.json").is_file()
    train = json.loads((output / "data" / "train" / "train.json").read_text())
    rm_train = json.loads((output / "RM_data" / "train.json").read_text())
    assert train and rm_train and len(rm_train) % len(METRIC_NAMES) == 0


AGENTS = ("demo-scripted", "demo-agent")


@pytest.mark.slow  # the quick demo end to end: a few minutes on 2 cores
def test_quick_demo_answers_reviews_and_table(quick_demo):
    output, stdout = quick_demo
    for split, test_dir in (("in-test", "in-distribution"), ("out-test", "out-of-distribution")):
        tests = json.loads((output / "data" / "test" / test_dir / "comment_test.json").read_text())
        for agent in AGENTS:
            answers = json.loads((output / "eval" / f"{split}_answers" / agent / "comment_test.json").read_text())
            assert [r["id"] for r in answers] == [r["id"] for r in tests]
            assert all(isinstance(r["conversations"][1].get("answer"), str) for r in answers)
            reviews = json.loads((output / "eval" / f"{split}_reviews" / agent / "comment_test.json").read_text())
            assert all(set(r["rm_review"]) == set(METRIC_NAMES) for r in reviews)
            assert (output / "eval" / f"{split}_results" / agent / "comment_test.csv").is_file()
            rule = json.loads((output / "rule_judge" / f"{split}_reviews" / agent / "comment_test.json").read_text())
            assert [r["id"] for r in rule] == [r["id"] for r in tests]
    with open(output / "report" / "table5.csv", newline="") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert {f"{a}{s}" for a in AGENTS for s in ("", " (In-Test)", " (Out-Test)")} <= set(rows)
    for agent in AGENTS:
        entries = [entry for split in ("in-test", "out-test") for record in json.loads(
            (output / "eval" / f"{split}_reviews" / agent / "comment_test.json").read_text())
            for entry in record["rm_review"].values()]
        parsed = sum(parse_score_pair(entry["review"]) is not None for entry in entries)
        assert entries and f"{agent}: reward-model reviews that parse into a score pair: {parsed}/{len(entries)}" in stdout
    radar = output / "report" / "radar.png"
    assert f"Radar chart: {radar}" in stdout and radar.read_bytes().startswith(b"\x89PNG")
    assert "| demo-agent |" in stdout and "| demo-scripted |" in stdout


def _overall_comparison(report_dir):
    with open(report_dir / "comparisons.csv", newline="") as handle:
        return next(r for r in csv.DictReader(handle) if r["column"] == "Overall")


@pytest.mark.slow  # the quick demo end to end: a few minutes on 2 cores
def test_quick_demo_tells_the_two_agents_apart(quick_demo):
    """The demo's judge (the rule judge, its GPT-4) scores the scripted agent above the briefly trained one and the
    paired interval of the difference lies above 0: its Table 5 has two distinguishable rows. The reward model's
    table and its agreement with the rule judge are reported beside it (a 12-step reward model need not tell the
    agents apart: the full demo's measured figures are in docs/evaluation.md)."""
    output, stdout = quick_demo
    judge_report = output / "report" / "rule_judge"
    with open(judge_report / "table5.csv", newline="") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert float(rows["demo-scripted"]["Overall"]) == 1.0 > float(rows["demo-agent"]["Overall"])
    overall = _overall_comparison(judge_report)
    assert (overall["model_a"], overall["model_b"]) == AGENTS and float(overall["low"]) > 0, overall
    assert "Table 5 by the rule-based judge" in stdout and "| demo-scripted |" in stdout
    assert "demo-scripted - demo-agent, Overall" in stdout and "(apart: the interval excludes 0)" in stdout
    assert (judge_report / "dimensions.png").read_bytes().startswith(b"\x89PNG")

    with open(output / "report" / "comparisons.csv", newline="") as handle:
        # the pair is there: compared, or with the note why not (a 12-step reward model's reviews may not parse)
        assert {(r["model_a"], r["model_b"]) for r in csv.DictReader(handle)} == {AGENTS}
    with open(output / "report" / "agreement_in-test.csv", newline="") as handle:
        agreement = {r["metric"]: r for r in csv.DictReader(handle)}
    assert "all metrics" in agreement  # its figures: whatever the reward model's parsed reviews give
    assert "The reward model against the rule-based judge" in stdout
