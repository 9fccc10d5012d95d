"""The synthetic demo dataset (mmrole.demo.data), the rule-based judge (mmrole.demo.judge) and the scripted agent
(mmrole.demo.scripted): raw MMRole-Data layout that data_prep/build_data.py accepts without a skip, deterministic
per seed, learnable content; a judge whose rules find the flaws planted in candidate answers and none in the ground
truth, and review files that eval/build_RM_data.py turns into reward-model samples."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmrole.common.metrics import METRIC_NAMES, parse_score_pair
from mmrole.common.prompts import language_of
from mmrole.demo.data import CHARACTERS, MANIFEST, colour_word, shape_word, write_dataset
from mmrole.demo.judge import CANDIDATES, PENALTIES, RuleJudge, candidate, review_answers, write_reviews

REPO = Path(__file__).resolve().parents[2]


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The dataset (2 dialogues per character, type and source) and build_data's output on it."""
    base = tmp_path_factory.mktemp("demo")
    root = base / "MMRole-Data"
    write_dataset(root, seed=3, dialogues=2)
    out = base / "data"
    result = subprocess.run([sys.executable, str(REPO / "data_prep" / "build_data.py"), "--data_root", str(root),
                             "--output_dir", str(out), "--in_test_per_type", "7", "--check_images"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return root, out


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, built):
    root, _ = built
    write_dataset(tmp_path / "again", seed=3, dialogues=2)
    assert _digest(tmp_path / "again") == _digest(root)
    write_dataset(tmp_path / "other", seed=4, dialogues=2)
    assert _digest(tmp_path / "other") != _digest(root)


def test_refuses_foreign_folders_and_replaces_its_own(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_dataset(foreign, overwrite=True)
    assert (foreign / "thesis.txt").read_text() == "keep me"
    ours = tmp_path / "ours"
    write_dataset(ours, dialogues=1)
    with pytest.raises(FileExistsError):
        write_dataset(ours, dialogues=1)
    write_dataset(ours, dialogues=1, overwrite=True)
    assert (ours / MANIFEST).is_file()


def test_raw_layout_builds_without_a_skip(built):
    root, out = built
    stats = json.loads((out / "build_stats.json").read_text())
    assert (out / "skipped.jsonl").read_text().strip() == "", "every generated record is usable"
    for split in ("in-distribution", "out-of-distribution"):
        roles = json.loads((root / "profiles" / split / "roles.json").read_text())
        profiles = json.loads((root / "profiles" / split / "profiles.json").read_text())
        assert sorted(profiles) == sorted(name for names in roles.values() for name in names)
        for name, profile in profiles.items():
            assert profile.count("### ") == 5, name
        for dialogue_type in ("comment", "human-role", "inter-role"):
            tests = json.loads((out / "test" / split / f"{dialogue_type}_test.json").read_text())
            assert tests, (split, dialogue_type)
    scripts = {c.script for c in CHARACTERS}
    assert {"English", "Chinese"} == {language_of(s) for s in scripts} and "Hypothetical Characters" in scripts
    annotations = json.loads((root / "images" / "annotations.json").read_text())
    assert annotations and all((root / "images" / a["image"]).is_file() for a in annotations)
    assert stats, "build_data wrote its statistics"


def test_targets_carry_catchphrase_colour_and_shape(built):
    """What makes the data learnable: every character turn opens with the catchphrase, and a commentary
    names the dominant colour and shape of its image (as the manifest records them)."""
    root, out = built
    manifest = json.loads((root / MANIFEST).read_text())["images"]
    by_name = {c.name: c for c in CHARACTERS}
    train = json.loads((out / "train" / "train.json").read_text())
    assert len(train) > 100
    for split in ("in-distribution", "out-of-distribution"):
        for dialogue_type in ("comment", "human-role", "inter-role"):
            for sample in json.loads((out / "test" / split / f"{dialogue_type}_test.json").read_text()):
                character = by_name[sample["role"]]
                target = sample["conversations"][1]["value"]
                assert target.startswith(character.catchphrase), sample["id"]
                if dialogue_type == "comment":
                    image = manifest[sample["image"]]
                    assert colour_word(image["colour"], character.language) in target
                    assert shape_word(image["shape"], character.language) in target


def test_rule_judge_reviews_candidates_and_feeds_build_rm_data(built, tmp_path):
    root, out = built
    reviews_dir = tmp_path / "judge" / "demo-rule-judge"
    counts = write_reviews(root, out / "train" / "train.json", reviews_dir, samples=22, seed=1)
    assert sum(counts.values()) == 22 and set(counts) == set(CANDIDATES)
    test_ids = {s["id"] for split in ("in-distribution", "out-of-distribution") for t in ("comment", "human-role", "inter-role")
                for s in json.loads((out / "test" / split / f"{t}_test.json").read_text())}
    records = [r for path in sorted(reviews_dir.glob("*.json")) for r in json.loads(path.read_text())]
    assert len(records) == 22 and not test_ids & {r["id"] for r in records}, "only training samples are reviewed"
    for record in records:
        answer, truth = record["conversations"][1]["answer"], record["conversations"][1]["value"]
        for metric in METRIC_NAMES:
            entry = record["rm_review"][metric]
            assert parse_score_pair(entry["review"]) == tuple(entry["score"])
            assert entry["score"][1] == 9.0 and 1.0 <= entry["score"][0] <= 9.0
            if answer == truth:
                assert entry["score"][0] == 9.0, "a faithful answer loses nothing"
    assert sum(min(e["score"][0] for e in r["rm_review"].values()) < 9.0 for r in records) >= 12, "flaws lose points"
    assert all(set(penalties) <= set(METRIC_NAMES) for penalties in PENALTIES.values())

    rm_file = tmp_path / "rm_train.json"
    result = subprocess.run([sys.executable, str(REPO / "eval" / "build_RM_data.py"), "--input_dir", str(reviews_dir),
                             "--image_dir", str(root / "images"), "--output_file", str(rm_file)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(rm_file.read_text())) == 22 * 8, result.stderr


PLANTED = {"no_catchphrase": "no_catchphrase", "wrong_colour": "wrong_colour", "word_salad": "word_salad",
           "other_character": "wrong_character", "assistant": "assistant_style", "off_topic": "off_topic",
           "repetitive": "repetitive", "loop": "repetitive"}


def _test_records(out):
    return [s for split in ("in-distribution", "out-of-distribution") for t in ("comment", "human-role", "inter-role")
            for s in json.loads((out / "test" / split / f"{t}_test.json").read_text())]


def test_rule_judge_finds_each_planted_flaw_and_none_in_the_ground_truth(built):
    import random

    root, out = built
    judge = RuleJudge(root)
    rng = random.Random(0)
    found = {kind: 0 for kind in PLANTED}
    for record in _test_records(out):
        truth = record["conversations"][1]["value"]
        assert judge.defects(record, truth) == (), record["id"]
        _, image = judge.facts(record)
        assert judge.defects(record, candidate("scripted", record, image, rng)) == ()
        language = judge.facts(record)[0].language
        talks_about_image = any(word in truth.lower() for word in (colour_word(image.colour, language),
                                                                    shape_word(image.shape, language)))
        for kind, defect in PLANTED.items():
            answer = candidate(kind, record, image, rng)
            # Only where the kind applies: a colour to swap in the ground truth; an image talk to leave (a closing
            # line such as "We agree on this one" does not talk about the image, so leaving it is no flaw).
            if answer != truth and (kind != "off_topic" or talks_about_image):
                assert defect in judge.defects(record, answer), (kind, record["id"], answer)
                found[kind] += 1
    assert all(found.values()), found
    record = _test_records(out)[0]
    empty = judge.review(record, "")
    assert {entry["score"][0] for entry in empty.values()} == {1.0}  # nothing said: the lowest score everywhere


def test_rule_judge_and_scripted_agent_on_test_files(built, tmp_path):
    """The scripted agent answers every test sample in other words than the ground truth; the judge reviews the
    answers files into reviews files that RM_result scores: the scripted answers lose nothing."""
    from mmrole.demo.scripted import answer_files
    from mmrole.eval.results import score_reviews_file

    root, out = built
    answers, reviews = tmp_path / "answers", tmp_path / "reviews"
    files, count = answer_files(root, out / "test" / "in-distribution", answers, seed=0)
    tests = [r for t in ("comment", "human-role", "inter-role")
             for r in json.loads((out / "test" / "in-distribution" / f"{t}_test.json").read_text())]
    assert files == 3 and count == len(tests)
    answered = [r for path in sorted(answers.glob("*.json")) for r in json.loads(path.read_text())]
    assert sum(r["conversations"][1]["answer"] != r["conversations"][1]["value"] for r in answered) > len(answered) / 2
    assert review_answers(root, answers, reviews) == (count, 0)
    for path in sorted(reviews.glob("*.json")):
        result = score_reviews_file(path)
        assert result.complete and all(value == 1.0 for value in result.scores.values()), path.name
