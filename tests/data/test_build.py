"""data_prep/build_data.py: the published split rebuilt byte for byte from the raw data, the paper's
sampled split, the training set, statistics, and bad input (synthetic trees in tmp_path)."""

import json
from collections import Counter
from pathlib import Path

import pytest

from mmrole.common.prompts import ROLEPLAY_SYSTEM
from mmrole.data.build import BuildOptions, BuildResult, build, choose_test_samples, load_data
from mmrole.data.raw import DIALOGUE_TYPES
from tests.support.raw_data import OUT_ROLES, dialogue_file, edit_json, make_raw_tree, raw_records, train_ids
from tests.support.scripts import load_script

# Published samples / with a dialogue in the raw snapshot / rebuilt identically / data errors.
# 216: the shared snapshot (In-Test only, in-distribution data only). 294: the full release with
# Out-Test, where the protocol found one data error (a character talking with itself).
KNOWN_SNAPSHOTS = {216: (191, 191, 0), 294: (269, 268, 1)}
FIELDS = ("id", "system", "image", "conversations", "role", "script", "other_role")


# --- oracles: read the published and raw files directly, without the code under test ------------

def published_samples(reference: Path):
    """Every published test sample once (from one model's answers), without the model's answer."""
    samples = []
    for folder in ("in-test_answers", "out-test_answers"):
        for path in sorted((reference / folder / "mmrole-agent").glob("*_test.json")):
            for record in json.loads(path.read_text(encoding="utf-8")):
                record = dict(record)
                record["conversations"] = [{k: v for k, v in turn.items() if k != "answer"}
                                           for turn in record["conversations"]]
                samples.append(record)
    return samples


def is_self_talk(published: dict, raw: dict) -> bool:
    speakers = {turn.get("role", turn.get("from")) for turn in raw.get("conversations") or []}
    return published["role"] == published["other_role"] or len(speakers) == 1


def type_of(sample_id: str) -> str:
    return ("comment" if "_comment_" in sample_id else
            "human-role" if "_human-role-dialogue_" in sample_id else "inter-role")


# --- the published split on the real data ----------------------------------------------------------

@pytest.fixture(scope="module")
def official_build(mmrole_data, mmrole_reference, tmp_path_factory):
    published = published_samples(mmrole_reference)
    out = tmp_path_factory.mktemp("official")
    log = []
    result = build(BuildOptions(mmrole_data, out, test_ids=[s["id"] for s in published]), log=log.append)
    return published, out, result, log


def test_published_split_is_rebuilt_byte_for_byte(official_build, mmrole_data):
    published, out, result, _ = official_build
    raw = raw_records(mmrole_data)
    rebuilt = {}
    for path in (out / "test").rglob("*_test.json"):
        for record in json.loads(path.read_text(encoding="utf-8")):
            assert list(record) == list(FIELDS), path  # the published key order
            rebuilt[record["id"]] = record
    with_dialogue = [s for s in published if s["id"].rpartition("_")[0] in raw]
    identical = [s for s in with_dialogue if json.dumps(rebuilt.get(s["id"]), ensure_ascii=False)
                 == json.dumps(s, ensure_ascii=False)]
    exceptions = [s for s in with_dialogue if s not in identical]
    assert len(published) in KNOWN_SNAPSHOTS, f"unknown reference snapshot of {len(published)} samples"
    expected_with, expected_identical, expected_errors = KNOWN_SNAPSHOTS[len(published)]
    assert (len(with_dialogue), len(identical)) == (expected_with, expected_identical), [s["id"] for s in exceptions]
    assert len(exceptions) == expected_errors
    for sample in exceptions:  # the only difference allowed: the known data error
        assert is_self_talk(sample, raw[sample["id"].rpartition("_")[0]]), f"{sample['id']} differs"
    # published samples without a dialogue are reported, not invented
    not_built = {i for i, _ in result.missing_test_ids}
    assert not_built == {s["id"] for s in published} - set(rebuilt)
    assert all(s["id"] in not_built for s in published if s not in with_dialogue)


def test_published_split_output_files_and_counts(official_build):
    published, out, result, _ = official_build
    by_type = Counter(path.name for path in (out / "test" / "in-distribution").glob("*.json"))
    assert sorted(by_type) == [f"{t}_test.json" for t in DIALOGUE_TYPES]
    expected = Counter(("in-distribution", type_of(s["id"])) for s in published)
    built_ids = set()
    for (split, dialogue_type), count in result.test.items():
        records = json.loads((out / "test" / split / f"{dialogue_type}_test.json").read_text(encoding="utf-8"))
        assert len(records) == count <= expected[(split, dialogue_type)]
        built_ids |= {r["id"] for r in records}
    order = [s["id"] for s in published if s["id"] in built_ids]
    written = [r["id"] for t in DIALOGUE_TYPES
               for r in json.loads((out / "test" / "in-distribution" / f"{t}_test.json").read_text(encoding="utf-8"))]
    assert written == order  # the order of --test_ids


def test_test_dialogues_never_in_training(official_build, mmrole_data):
    published, out, result, _ = official_build
    raw = raw_records(mmrole_data)
    held_out = {s["id"].rpartition("_")[0] for s in published if s["id"].rpartition("_")[0] in raw}
    ids = train_ids(out / "train" / "train.json")
    assert len(ids) == len(set(ids)) == result.train
    train_dialogues = {i.rpartition("_")[0] for i in ids}
    assert not train_dialogues & held_out
    usable = {i for i, r in raw.items() if len(r.get("conversations") or []) >= 2}
    assert train_dialogues == usable - held_out  # every other usable dialogue trains


def test_statistics_count_the_empty_and_truncated_records(official_build, mmrole_data):
    _, out, result, log = official_build
    raw = raw_records(mmrole_data)
    empty = sum(1 for r in raw.values() if not r.get("conversations"))
    truncated = sum(1 for r in raw.values() if len(r.get("conversations") or []) == 1)
    assert (empty, truncated) == (641, 209)  # "about 850 empty or truncated records"
    text = "\n".join(log)
    assert f"empty_record {empty}" in text and f"truncated {truncated}" in text
    assert "72 characters" in text and "COCO" in text  # missing COCO images are a statistic
    stats = json.loads((out / "build_stats.json").read_text(encoding="utf-8"))
    assert stats["images"]["missing_by_folder"].keys() == {"COCO"}
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert Counter(s["reason"] for s in skipped)["empty_record"] == empty
    assert all(s["path"].endswith(".json") or s["path"] == "--test_ids" for s in skipped)


def test_paper_sampling_on_real_data_is_seeded(mmrole_data):
    loaded = load_data(mmrole_data)

    def ids(seed):
        result = BuildResult()
        samples = choose_test_samples(loaded, BuildOptions(mmrole_data, "-", seed=seed), result)
        assert not result.missing_test_ids
        return samples

    first, again, other = ids(1), ids(1), ids(2)
    assert [s.id for s in first] == [s.id for s in again]
    assert [s.id for s in first] != [s.id for s in other]
    assert len(first) == 3 * 72
    for dialogue_type in DIALOGUE_TYPES:  # 72 characters: one sample each per type
        owners = [s.dialogue_id.split("_")[0] for s in first if s.type == dialogue_type]
        assert len(owners) == 72
        roles = Counter(s.role for s in first if s.type == dialogue_type and dialogue_type != "inter-role")
        assert all(n == 1 for n in roles.values())
    assert {s.split for s in first} == {"in-distribution"}


# --- synthetic trees -----------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "raw"
    make_raw_tree(root)
    return root


def run_build(root, out, **options):
    log = []
    result = build(BuildOptions(root, out, in_test_per_type=options.pop("per_type", 6), **options), log=log.append)
    return result, "\n".join(log)


def read(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_sampled_split_with_out_of_distribution(tree, tmp_path):
    result, _ = run_build(tree, tmp_path / "out", seed=3)
    for dialogue_type in DIALOGUE_TYPES:
        in_test = read(tmp_path / "out" / "test" / "in-distribution" / f"{dialogue_type}_test.json")
        owners = Counter(r["id"].split("_")[0] for r in in_test)
        assert len(in_test) == 6 and len(owners) == 6  # one per in-distribution character
        out_test = read(tmp_path / "out" / "test" / "out-of-distribution" / f"{dialogue_type}_test.json")
        kinds = Counter((r["id"].split("_")[0], "COCO" if "_COCO_" in r["id"] else "script") for r in out_test)
        assert kinds == {(n.split()[0], s): 1 for n in OUT_ROLES["The Big Bang Theory"] for s in ("COCO", "script")}
    ids = train_ids(tmp_path / "out" / "train" / "train.json")
    assert ids and not any(i.startswith(("Sheldon", "Penny")) for i in ids)  # Out-Test characters never train
    test_dialogues = {r["id"].rpartition("_")[0] for p in (tmp_path / "out" / "test").rglob("*.json") for r in read(p)}
    assert not {i.rpartition("_")[0] for i in ids} & test_dialogues


def test_build_is_reproducible(tree, tmp_path):
    run_build(tree, tmp_path / "a", seed=5)
    run_build(tree, tmp_path / "b", seed=5)
    run_build(tree, tmp_path / "c", seed=6)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.json"))
    assert files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "train" / "train.json").read_bytes() != (tmp_path / "c" / "train" / "train.json").read_bytes()


def test_training_format_and_annotation_quirk(tree, tmp_path):
    run_build(tree, tmp_path / "out", test_ids=[], image_prefix="data/images/")
    train = read(tmp_path / "out" / "train" / "train.json")
    sample = next(s for s in train if s["id"] == "Woody_comment_script_0_1")
    user, assistant = sample["conversations"]
    assert (user["from"], assistant["from"]) == ("user", "assistant")
    assert user["value"].startswith("Picture 1: <img>data/images/Toy_Story/01.jpg</img>\nPlease step into the shoes "
                                    "of Woody from Toy Story.")
    # annotations.json says Toy_story, the dialogue Toy_Story: the auxiliary block is still there
    assert ("The auxiliary information of the image is as follows:\n - Character information: From left to right "
            "are the heroes of Toy Story.\n - Place information: A quiet room.\n - Scene information: They talk."
            ) in user["value"]
    assert assistant["value"] == "Woody says: what a script picture, part 0, line 1. Reminds me of the old days."
    assert list(sample) == ["id", "system", "conversations"] and sample["system"] == ROLEPLAY_SYSTEM
    # human-role: one sample per character turn; inter-role: one per turn
    human = [s["id"] for s in train if s["id"].startswith("Woody_human-role-dialogue_COCO_1_")]
    inter = [s["id"] for s in train if s["id"].startswith("Woody_role-role-dialogue_COCO_1_")]
    assert human == [f"Woody_human-role-dialogue_COCO_1_{i}" for i in (1, 3, 5)]
    assert inter == [f"Woody_role-role-dialogue_COCO_1_{i}" for i in range(6)]


def test_missing_images_are_counted_or_skipped(tree, tmp_path):
    (tree / "images" / "Toy_Story" / "02.jpg").unlink()
    result, log = run_build(tree, tmp_path / "kept", test_ids=[])
    assert "without a file" in log and "'COCO':" in log and "'Toy_Story': 1" in log
    kept = train_ids(tmp_path / "kept" / "train" / "train.json")
    assert any(i.startswith("Woody_comment_script_1_") for i in kept)  # kept, only counted
    assert not any(s.reason == "missing_image" for s in result.skips)

    result, log = run_build(tree, tmp_path / "checked", test_ids=[], check_images=True)
    skipped = [s for s in result.skips if s.reason == "missing_image"]
    assert {s.item for s in skipped} >= {"Woody_comment_script_1_1", "Buzz_Lightyear_comment_script_1_1"}
    assert all("Toy_Story/02.jpg" in str(s) or "COCO" in str(s) for s in skipped)
    checked = train_ids(tmp_path / "checked" / "train" / "train.json")
    assert not any(i.startswith("Woody_comment_script_1_") or "_COCO_" in i for i in checked)
    assert "missing_image" in log


def test_bad_input_is_named_skipped_and_counted(tree, tmp_path):
    # a character of roles.json without profile
    edit_json(tree / "profiles" / "in-distribution" / "profiles.json", lambda p: p.pop("Buzz Lightyear"))
    # malformed JSON in one dialogue file
    broken = dialogue_file(tree, "human-role", "Woody", "COCO")
    broken.write_text(broken.read_text(encoding="utf-8")[:-40], encoding="utf-8")
    # a speaker who is not in the script, and an empty record
    def damage(records):
        records[0]["conversations"][1]["role"] = "Iron Man"
        records[1]["conversations"] = []
    edit_json(dialogue_file(tree, "inter-role", "孙悟空", "script"), damage)
    result, log = run_build(tree, tmp_path / "out", test_ids=["Woody_comment_COCO_0_1", "Nobody_comment_COCO_0_1"])

    reasons = {(s.reason, s.item): str(s) for s in result.skips}
    assert "Buzz Lightyear" in reasons[("missing_profile", "Buzz Lightyear")]
    assert "profiles.json" in reasons[("missing_profile", "Buzz Lightyear")]
    assert str(broken) in reasons[("malformed_file", "(whole file)")] and "line" in reasons[("malformed_file", "(whole file)")]
    speaker = reasons[("unknown_speaker", "孙悟空_role-role-dialogue_script_0")]
    assert "Iron Man" in speaker and "孙悟空_script.json" in speaker
    assert "孙悟空_role-role-dialogue_script_1" in reasons[("empty_record", "孙悟空_role-role-dialogue_script_1")]
    buzz = [s for s in result.skips if s.reason == "missing_profile" and s.item.startswith("Buzz")]
    assert len(buzz) == 1 + 3 * 5  # the character, then each of its 15 dialogues
    partner_skips = [s for s in result.skips if s.reason == "missing_profile" and s.item.startswith("Woody_role-role")]
    assert len(partner_skips) == 5  # Woody's inter-role dialogues need Buzz's profile too
    # the rest goes on
    ids = train_ids(tmp_path / "out" / "train" / "train.json")
    assert any(i.startswith("Woody_human-role-dialogue_script_") for i in ids)
    assert any(i.startswith("孙悟空_role-role-dialogue_COCO_") for i in ids)
    assert not any(i.startswith(("Buzz_", "Woody_human-role-dialogue_COCO_", "孙悟空_role-role-dialogue_script_0_"))
                   for i in ids)
    assert "missing_profile 21" in log and "malformed_file 1" in log
    assert dict(result.missing_test_ids) == {"Nobody_comment_COCO_0_1": "its dialogue is not in the raw data"}
    lines = (tmp_path / "out" / "skipped.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(result.skips) + 1


def test_test_ids_naming_a_non_target_turn_are_reported(tree, tmp_path):
    result, _ = run_build(tree, tmp_path / "out", test_ids=["Woody_human-role-dialogue_COCO_0_2", "Woody_comment",
                                                            "Woody_comment_COCO_0_1", "Woody_comment_COCO_0_1"])
    why = dict(result.missing_test_ids)
    assert "not a target turn" in why["Woody_human-role-dialogue_COCO_0_2"]
    assert "not <dialogue id>_<turn index>" in why["Woody_comment"]
    assert result.test == {("in-distribution", "comment"): 1}
    assert not (tmp_path / "out" / "test" / "out-of-distribution").exists()


def test_cli_help_and_bad_root(tmp_path, capsys):
    main = load_script("data_prep/build_data.py").main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--data_root", "--output_dir", "--image_prefix", "--seed", "--test_ids", "--check_images"):
        assert flag in help_text
    for root in (tmp_path / "nothing", tmp_path / "empty"):  # no input: a usage error
        if root.name == "empty":
            root.mkdir()
        assert main(["--data_root", str(root), "--output_dir", str(tmp_path / "out")]) == 2
        assert f"{root}: no such folder, or an empty one: nothing to do" in capsys.readouterr().err
    (tmp_path / "empty" / "images").mkdir()  # a data folder without roles.json: that file cannot be used
    assert main(["--data_root", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "out")]) == 1
    assert "roles.json" in capsys.readouterr().err



def test_cli_test_ids_file_is_the_split(tree, tmp_path, capsys):
    main = load_script("data_prep/build_data.py").main

    chosen = ["Woody_comment_COCO_0_1", "孙悟空_human-role-dialogue_script_1_3", "Buzz_Lightyear_role-role-dialogue_COCO_2_0"]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# the split\n" + "\n".join([chosen[0], "", *chosen[1:]]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--data_root", str(tree), "--output_dir", str(out), "--test_ids", str(ids_file)]) == 0
    written = {p.name: [r["id"] for r in read(p)] for p in (out / "test" / "in-distribution").glob("*.json")}
    assert written == {"comment_test.json": chosen[:1], "human-role_test.json": chosen[1:2],
                       "inter-role_test.json": chosen[2:]}
    assert not (out / "test" / "out-of-distribution").exists()  # no sampled Out-Test next to the file's split
    held_out = {i.rpartition("_")[0] for i in chosen}
    trained = {i.rpartition("_")[0] for i in train_ids(out / "train" / "train.json")}
    in_distribution = {i for i in raw_records(tree) if not i.startswith(("Sheldon", "Penny"))}
    assert trained == in_distribution - held_out
    assert "test: in-distribution/comment 1, in-distribution/human-role 1, in-distribution/inter-role 1" in capsys.readouterr().out


def test_default_run_counts_samples_whose_image_is_missing(tree, tmp_path):
    (tree / "images" / "Toy_Story" / "02.jpg").unlink()
    result, log = run_build(tree, tmp_path / "out", test_ids=["Woody_comment_COCO_0_1", "Woody_comment_script_1_1",
                                                              "Woody_comment_script_0_1"])
    # the oracle: every written sample whose image file is not under images/
    test_images = [r["image"] for p in (tmp_path / "out" / "test").rglob("*.json") for r in read(p)]
    train_images = [s["conversations"][0]["value"].split("<img>images/", 1)[1].split("</img>", 1)[0]
                    for s in read(tmp_path / "out" / "train" / "train.json")]
    missing_test = sum(not (tree / "images" / image).is_file() for image in test_images)
    missing_train = sum(not (tree / "images" / image).is_file() for image in train_images)
    assert (missing_test, len(test_images)) == (2, 3) and 0 < missing_train < len(train_images)
    assert (f"samples whose image file is missing: {missing_test} test, {missing_train} train "
            "(kept; --check_images skips them)") in log
    stats = read(tmp_path / "out" / "build_stats.json")["samples_with_missing_image"]
    assert stats == {"test": missing_test, "train": missing_train, "skipped": False}


def test_duplicate_ids_are_skipped_naming_the_first_file(tree, tmp_path):
    first = dialogue_file(tree, "comment", "Woody", "COCO")
    again = dialogue_file(tree, "comment", "Woody", "script")
    copy = dict(read(first)[0], conversations=[{"from": "human", "value": "Another question?"},
                                               {"role": "Woody", "value": "Another answer, partner."}])
    edit_json(again, lambda records: records.append(copy))
    result, log = run_build(tree, tmp_path / "out", test_ids=[])
    duplicates = [s for s in result.skips if s.reason == "duplicate_id"]
    assert [(s.path, s.item) for s in duplicates] == [(str(again), "Woody_comment_COCO_0")]
    assert str(first) in duplicates[0].detail and "duplicate_id 1" in log
    trained = read(tmp_path / "out" / "train" / "train.json")
    woody = [s for s in trained if s["id"] == "Woody_comment_COCO_0_1"]
    assert len(woody) == 1 and woody[0]["conversations"][1]["value"] != "Another answer, partner."  # the first kept


@pytest.mark.parametrize("wrapper, positional", [("build_data.sh", ["ROOT", "OUT", "IDS"]), ("build_data.sh", []),
                                                  ("filter_dialogues.sh", ["ROOT", "OUT"]),
                                                  ("filter_dialogues.sh", ["ROOT", "--"]),
                                                  ("gen_profiles.sh", []), ("gen_profiles.sh", ["ROOT", "OUT", "gpt-x"]),
                                                  ("gen_dialogues.sh", []), ("gen_dialogues.sh", ["ROOT", "--"])])
def test_wrappers_pass_extra_flags_on(repo_root, wrapper, positional):
    import subprocess

    done = subprocess.run(["bash", f"data_prep/{wrapper}", *positional, "--help"], cwd=repo_root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {wrapper.replace('.sh', '.py')}")  # --help reached the script
