"""data_prep/filter_dialogues.py: every rule fires on a crafted record and names it; the kept records
keep the raw layout (build_data reads them); the real data's damage is found."""

import json

import pytest

from mmrole.data.build import BuildOptions, build
from mmrole.data.filter import FilterConfig, run_filter
from tests.support.raw_data import dialogue_file, edit_json, make_raw_tree, raw_records, train_ids
from tests.support.scripts import load_script


def set_turn(records, k, turn, text=None, speaker=None):
    if text is not None:
        records[k]["conversations"][turn]["value"] = text
    if speaker is not None:
        records[k]["conversations"][turn]["role"] = speaker


# id -> the rule that must reject it (each damage below is the only thing wrong with its record)
EXPECTED = {
    "Woody_human-role-dialogue_COCO_0": "speaker_prefix",
    "Woody_human-role-dialogue_COCO_1": "assistant_phrase",
    "孙悟空_human-role-dialogue_COCO_0": "wrong_language",
    "孙悟空_human-role-dialogue_COCO_1": "assistant_phrase",
    "Buzz_Lightyear_role-role-dialogue_COCO_0": "truncated_turn",
    "Buzz_Lightyear_role-role-dialogue_COCO_1": "turn_length",
    "Woody_comment_COCO_2": "duplicate",
    "Maya_Patel_human-role-dialogue_script_0": "repeated_turn",
    "Maya_Patel_human-role-dialogue_COCO_2": "dialogue_length",
    "Liam_Johnson_role-role-dialogue_COCO_0": "wrong_speaker_order",
    "Liam_Johnson_role-role-dialogue_COCO_1": "unknown_speaker",
    "猪八戒_role-role-dialogue_script_0": "self_talk",
    "Maya_Patel_comment_COCO_0": "empty_record",
    "Maya_Patel_comment_COCO_1": "truncated",
    "Buzz_Lightyear_human-role-dialogue_COCO_0": "wrong_speaker_order",  # the character speaks first
    "Buzz_Lightyear_comment_COCO_0": "wrong_speaker_order",  # a third turn after the monologue
    "(whole file)": "malformed_file",
}


@pytest.fixture
def damaged(tmp_path):
    root = tmp_path / "raw"
    make_raw_tree(root)
    edit_json(dialogue_file(root, "human-role", "Woody", "COCO"), lambda r: (
        set_turn(r, 0, 1, "Woody: Howdy partner, that's a fine picture."),
        set_turn(r, 1, 3, "Well, as an AI language model I cannot see images.")))
    edit_json(dialogue_file(root, "human-role", "孙悟空", "COCO"), lambda r: (
        set_turn(r, 0, 1, "What a lovely day in the mountains, master."),
        set_turn(r, 1, 1, "抱歉，我无法回答这个问题。")))
    edit_json(dialogue_file(root, "inter-role", "Buzz Lightyear", "COCO"), lambda r: (
        set_turn(r, 0, 2, "To infinity and beyond, and then we"), set_turn(r, 1, 1, "Hi!")))
    edit_json(dialogue_file(root, "comment", "Woody", "COCO"),
              lambda r: r[2].__setitem__("conversations", r[1]["conversations"]))
    edit_json(dialogue_file(root, "human-role", "Maya Patel", "script"),
              lambda r: set_turn(r, 0, 2, r[0]["conversations"][0]["value"]))
    edit_json(dialogue_file(root, "human-role", "Maya Patel", "COCO"),
              lambda r: r[2].__setitem__("conversations", r[2]["conversations"][:2]))
    edit_json(dialogue_file(root, "human-role", "Liam Johnson", "COCO"),
              lambda r: r[0]["conversations"].append({"role": "human", "value": "And what about the sky?"}))
    edit_json(dialogue_file(root, "inter-role", "Liam Johnson", "COCO"), lambda r: (
        r[0]["conversations"].reverse(), set_turn(r, 1, 2, speaker="Iron Man")))
    edit_json(dialogue_file(root, "inter-role", "猪八戒", "script"),
              lambda r: [turn.__setitem__("role", "猪八戒") for turn in r[0]["conversations"]])
    edit_json(dialogue_file(root, "human-role", "Buzz Lightyear", "COCO"), lambda r: r[0]["conversations"].reverse())
    edit_json(dialogue_file(root, "comment", "Buzz Lightyear", "COCO"), lambda r: r[0]["conversations"].append(
        {"role": "Buzz Lightyear", "value": "And one more thing: to infinity!"}))
    edit_json(dialogue_file(root, "comment", "Maya Patel", "COCO"), lambda r: (
        r[0].__setitem__("conversations", []), r[1].__setitem__("conversations", r[1]["conversations"][:1])))
    return root


def break_json(root):
    broken = dialogue_file(root, "comment", "猪八戒", "COCO")
    broken.write_text(broken.read_text(encoding="utf-8").replace("}", "", 1), encoding="utf-8")


def test_each_rule_rejects_its_record_and_says_why(damaged, tmp_path):
    break_json(damaged)
    out = tmp_path / "filtered"
    report, verdicts = run_filter(damaged, out)
    rejected = {v.id: v for v in verdicts if not v.kept}
    assert {i: [r for r, _ in v.reasons] for i, v in rejected.items()} == {i: [r] for i, r in EXPECTED.items()}
    assert "'Woody:'" in rejected["Woody_human-role-dialogue_COCO_0"].reasons[0][1]
    assert "turn 2" in rejected["Buzz_Lightyear_role-role-dialogue_COCO_0"].reasons[0][1]
    assert "Woody_comment_COCO_1" in rejected["Woody_comment_COCO_2"].reasons[0][1]  # names the original
    assert "Iron Man" in rejected["Liam_Johnson_role-role-dialogue_COCO_1"].reasons[0][1]
    assert ("turn 0 is by 'Buzz Lightyear', expected 'human'"
            in rejected["Buzz_Lightyear_human-role-dialogue_COCO_0"].reasons[0][1])
    assert "found 3" in rejected["Buzz_Lightyear_comment_COCO_0"].reasons[0][1]
    assert rejected["(whole file)"].path.endswith("猪八戒_COCO.json")
    notes = {v.id: v.notes for v in verdicts if v.notes}
    assert list(notes) == ["Liam_Johnson_human-role-dialogue_COCO_0"]  # a note, not a rejection
    assert report.rejected == len(EXPECTED) and report.kept == report.records - report.rejected
    assert report.by_rule["assistant_phrase"] == 2 and report.notes == {"trailing_human_turn": 1}

    lines = [json.loads(l) for l in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {l["id"]: l["reasons"][0]["rule"] for l in lines} == EXPECTED
    assert all(l["path"].endswith(".json") and l["reasons"][0]["detail"] for l in lines)
    saved = json.loads((out / "filter_report.json").read_text(encoding="utf-8"))
    assert saved["rejected"] == len(EXPECTED)


def test_kept_records_keep_the_layout_and_feed_build_data(damaged, tmp_path):
    out = tmp_path / "filtered"
    run_filter(damaged, out)
    kept = raw_records(out)
    original = raw_records(damaged)
    assert set(kept) == set(original) - set(EXPECTED)
    assert all(kept[i] == original[i] for i in kept)  # records are copied, never edited
    assert (out / "dialogues" / "out-of-distribution" / "inter-role.json").is_file()
    log = []
    result = build(BuildOptions(damaged, tmp_path / "built", test_ids=[], dialogues_root=out), log=log.append)
    assert not result.skips  # nothing left for build_data to reject
    dialogues = {i.rpartition("_")[0] for i in train_ids(tmp_path / "built" / "train" / "train.json")}
    assert dialogues == {i for i in kept if not i.startswith(("Sheldon", "Penny"))}


def test_bounds_are_configurable(damaged, tmp_path):
    config = FilterConfig(turn_chars_en=(1, 4000), dialogue_turns={"comment": (2, 2), "human-role": (2, 40),
                                                                    "inter-role": (4, 40)})
    report, verdicts = run_filter(damaged, None, config)
    rejected = {v.id for v in verdicts if not v.kept}
    assert "Buzz_Lightyear_role-role-dialogue_COCO_1" not in rejected
    assert "Maya_Patel_human-role-dialogue_COCO_2" not in rejected
    assert "turn_length" not in report.by_rule


def test_real_data_damage_is_found(mmrole_data, tmp_path):
    raw = raw_records(mmrole_data)
    report, verdicts = run_filter(mmrole_data, tmp_path / "out")
    assert report.records == len(raw) == 13654
    empty = {i for i, r in raw.items() if not r.get("conversations")}
    one_turn = {i for i, r in raw.items() if len(r.get("conversations") or []) == 1}
    by_rule = {}
    for verdict in verdicts:
        for rule, _ in verdict.reasons:
            by_rule.setdefault(rule, set()).add(verdict.id)
    assert by_rule["empty_record"] == empty and len(empty) == 641
    assert by_rule["truncated"] == one_turn and len(one_turn) == 209
    # degenerate endings seen by eye in the data (code tokens glued to the end of a turn)
    assert {"Ant-Man_human-role-dialogue_COCO_46", "Monica_Geller_role-role-dialogue_script_9",
            "Harry_Potter_role-role-dialogue_COCO_37"} <= by_rule["truncated_turn"]
    assert by_rule["assistant_phrase"] == {"Joey_Tribbiani_role-role-dialogue_COCO_40"}
    assert "speaker_prefix" not in by_rule and "wrong_language" not in by_rule and "unknown_speaker" not in by_rule
    kept = raw_records(tmp_path / "out")
    assert all(len(r["conversations"]) >= 2 for r in kept.values())
    assert len(kept) == report.kept


def test_cli(damaged, tmp_path, capsys):
    main = load_script("data_prep/filter_dialogues.py").main

    break_json(damaged)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--output_dir" in capsys.readouterr().out
    # 1: the broken file could not be used (named); every other file was filtered
    assert main(["--data_root", str(damaged), "--output_dir", str(tmp_path / "f"), "--turn_chars_en", "1", "9000"]) == 1
    printed = capsys.readouterr()
    assert "error: file not used:" in printed.err and "malformed JSON" in printed.err
    printed = printed.out
    assert "rejected (speaker_prefix)" in printed and "Woody_human-role-dialogue_COCO_0" in printed
    assert "turn_length" not in printed
    assert f"{len(EXPECTED) - 1} rejected" in printed


def test_missing_profiles_and_duplicate_ids_are_rejected_by_name(tmp_path):
    root = tmp_path / "raw"
    make_raw_tree(root)
    profiles = root / "profiles" / "in-distribution" / "profiles.json"
    edit_json(profiles, lambda p: p.pop("Buzz Lightyear"))
    first = dialogue_file(root, "comment", "Woody", "COCO")
    again = dialogue_file(root, "comment", "Woody", "script")
    edit_json(again, lambda records: records.append(json.loads(first.read_text(encoding="utf-8"))[1]))
    report, verdicts = run_filter(root, tmp_path / "out")
    rejected = {(v.path, v.id): v.reasons for v in verdicts if not v.kept}
    # Buzz's own dialogues and Woody's inter-role ones (Buzz is the partner): read from the files
    needs_buzz = {i for i in raw_records(root) if i.startswith(("Buzz_Lightyear_", "Woody_role-role-dialogue_"))}
    missing = {i: reasons for (_, i), reasons in rejected.items() if reasons[0][0] == "missing_profile"}
    assert set(missing) == needs_buzz and len(needs_buzz) == 15 + 5
    assert all(reasons == [("missing_profile", f"no profile for 'Buzz Lightyear' in {profiles}")]
               for reasons in missing.values())
    assert rejected[(str(again), "Woody_comment_COCO_1")] == [("duplicate_id", f"id already used in {first}")]
    assert (str(first), "Woody_comment_COCO_1") not in rejected  # the first one is kept
    assert report.rejected == len(needs_buzz) + 1 and report.by_rule == {"missing_profile": 20, "duplicate_id": 1}
