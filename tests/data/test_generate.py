"""gen_profiles and gen_dialogues end to end against the local stub server, which answers with the
genuine GPT-4 profiles and dialogues of the shared raw data: what the server received, what was
written, malformed replies, failures, and resuming after a stop or a kill."""

import base64
import json
import re
import shutil
import zlib
from pathlib import Path

import pytest

from mmrole.backends.client import ChatClient
from mmrole.common.store import Journal
from mmrole.data.build import BuildOptions, build
from mmrole.data.generate.dialogues import DialogueOptions, generate_dialogues
from mmrole.data.generate.profiles import ProfileOptions, generate_profiles
from mmrole.data.generate.prompts import COMMENT_QUESTIONS, DIALOGUE_SYSTEM, GENERATOR_SYSTEM, PROMPT_VERSION
from mmrole.data.raw import name_stem
from tests.support.openai_stub import Fault, OpenAIStub, StubReply
from tests.support.raw_data import write_json
from tests.support.scripts import load_script

MODEL = "gpt-4-vision-stub"


def make_client(stub, **options):
    options = {"api_key": "sk-test-generators-0000", "timeout": 5, "backoff_initial": 0.001, "max_attempts": 3,
               "concurrency": 3, **options}
    return ChatClient(MODEL, base_url=stub.base_url, **options)


def output_files(root: Path):
    """Every output file under root except the journals, with its bytes."""
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".generation" not in p.parts}


def test_comment_question_pool_is_the_datas(mmrole_data):
    asked = {"English": set(), "Chinese": set()}
    chinese = {"孙悟空", "唐僧", "猪八戒", "沙悟净", "成龙", "小玉", "老爹", "杜甫", "李白"}
    for path in (mmrole_data / "dialogues" / "in-distribution" / "comment").glob("*.json"):
        language = "Chinese" if path.stem.rsplit("_", 1)[0] in chinese else "English"
        for record in json.loads(path.read_text(encoding="utf-8")):
            asked[language].add(record["conversations"][0]["value"])
    assert asked == {language: set(pool) for language, pool in COMMENT_QUESTIONS.items()}
    assert all(len(pool) == 10 for pool in COMMENT_QUESTIONS.values())


# --- profiles ------------------------------------------------------------------------------------

class GenuineProfiles:
    """Answers profile requests with the released GPT-4 profiles of the shared data."""

    def __init__(self, data_root: Path):
        base = data_root / "profiles" / "in-distribution"
        self.condensed = json.loads((base / "profiles.json").read_text(encoding="utf-8"))
        self.detailed_dir = base / "detailed_profiles"
        self.people = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((base / "meta_info_hypo").glob("*.json"))]
        self.names = sorted(self.condensed, key=len, reverse=True)
        self.broken = set()  # characters whose detailed profile always comes back malformed

    def detailed(self, name):
        return json.loads((self.detailed_dir / f"{name_stem(name)}.json").read_text(encoding="utf-8"))

    def __call__(self, request):
        text = request.user_text
        invent = re.match(r"Invent (\d+) ", text)
        if invent:
            taken = text.split("Do not reuse these names: ", 1)[1].split("\n", 1)[0]
            fresh = [p for p in self.people if p["name"] not in taken][: int(invent.group(1))]
            return "```json\n" + json.dumps(fresh, ensure_ascii=False) + "\n```"
        name = next(n for n in self.names if text.startswith((f"Below is source material about {n} ",
                                                              f"Below is source material about {n},",
                                                              f"Here is a detailed profile of {n} ",
                                                              f"Here is a detailed profile of {n},")))
        if text.startswith("Below"):
            if name in self.broken:
                return '{"introduction": "cut off in the mid'
            return json.dumps(self.detailed(name), ensure_ascii=False)
        return self.condensed[name]


@pytest.fixture
def profile_root(mmrole_data, tmp_path):
    """A raw tree holding roles and source texts only: three named characters, no hypothetical yet."""
    root = tmp_path / "raw"
    base = root / "profiles" / "in-distribution"
    write_json(base / "roles.json", {"Toy Story": ["Woody", "Buzz Lightyear"], "西游记": ["孙悟空"],
                                     "Hypothetical Characters": []})
    shared = mmrole_data / "profiles" / "in-distribution"
    for folder, name in (("raw_info_en", "Woody"), ("raw_info_en", "Buzz_Lightyear"), ("raw_info_zh", "孙悟空")):
        (base / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shared / folder / f"{name}.txt", base / folder / f"{name}.txt")
    return root


def run_profiles(stub, root, out, log_lines=None, **options):
    return generate_profiles(make_client(stub), ProfileOptions(root, output_dir=out, num_hypothetical=2,
                                                               hypothetical_batch=1, progress=False, **options),
                             log=(log_lines if log_lines is not None else []).append)


def test_gen_profiles_end_to_end(mmrole_data, profile_root, tmp_path):
    genuine = GenuineProfiles(mmrole_data)
    with OpenAIStub(genuine) as stub:
        report = run_profiles(stub, profile_root, tmp_path / "out")
        requests = stub.completion_requests
    assert {r.model for r in requests} == {MODEL}
    assert {r.system_prompt for r in requests} == {GENERATOR_SYSTEM}
    assert not any(r.image_urls for r in requests)  # profiles are text only
    assert len(requests) == 2 + 5 + 5  # 2 batches of people; 5 detailed and 5 condensed profiles
    wukong = [r for r in requests if r.user_text.startswith(("Below is source material about 孙悟空",
                                                             "Here is a detailed profile of 孙悟空"))]
    assert len(wukong) == 2 and all("in Chinese" in r.user_text for r in wukong)
    source = (profile_root / "profiles" / "in-distribution" / "raw_info_en" / "Woody.txt").read_text(encoding="utf-8")
    assert any(source.strip() in r.user_text for r in requests)

    base = tmp_path / "out" / "profiles" / "in-distribution"
    people = [p["name"] for p in genuine.people[:2]]
    assert report.new_people == people
    roles = json.loads((base / "roles.json").read_text(encoding="utf-8"))
    assert roles["Hypothetical Characters"] == people and roles["Toy Story"] == ["Woody", "Buzz Lightyear"]
    for person in genuine.people[:2]:
        meta = json.loads((base / "meta_info_hypo" / f"{name_stem(person['name'])}.json").read_text(encoding="utf-8"))
        assert meta == {**person, "generator": {"prompt_version": PROMPT_VERSION, "model": MODEL}}
    for name in ["Woody", "Buzz Lightyear", "孙悟空", *people]:
        detailed = json.loads((base / "detailed_profiles" / f"{name_stem(name)}.json").read_text(encoding="utf-8"))
        assert detailed.pop("generator") == {"prompt_version": PROMPT_VERSION, "model": MODEL}
        assert detailed == genuine.detailed(name)
    profiles = json.loads((base / "profiles.json").read_text(encoding="utf-8"))
    assert list(profiles) == ["Woody", "Buzz Lightyear", "孙悟空", *people]  # roles.json order
    assert profiles == {n: genuine.condensed[n].strip() for n in profiles}
    stamps = json.loads((base / "profiles.generator.json").read_text(encoding="utf-8"))
    assert set(stamps) == set(profiles)


def test_gen_profiles_retries_reports_and_never_writes_failures(mmrole_data, profile_root, tmp_path):
    genuine = GenuineProfiles(mmrole_data)
    genuine.broken = {"Buzz Lightyear"}
    lines = []
    with OpenAIStub(genuine, timeout_delay=1.0) as stub:
        stub.fail_next(Fault.TRUNCATED, Fault.SERVER_ERROR)  # the first two calls (detailed profiles), retried
        stub.fail_when(lambda r: r.user_text.startswith("Below is source material about Woody"), Fault.MALFORMED_JSON)
        report = generate_profiles(make_client(stub), ProfileOptions(profile_root, output_dir=tmp_path / "out",
                                                                     progress=False), log=lines.append)
        buzz = [r for r in stub.completion_requests if r.user_text.startswith("Below is source material about Buzz")]
    base = tmp_path / "out" / "profiles" / "in-distribution"
    assert len(buzz) == 3  # every attempt was made, then it failed
    failed = report.stages["detailed profiles"].failed
    assert len(failed) == 1 and "Buzz Lightyear" in failed[0] and "unusable reply" in failed[0]
    assert any("failed" in line and "Buzz Lightyear" in line for line in lines)
    assert not (base / "detailed_profiles" / "Buzz_Lightyear.json").exists()
    assert (base / "detailed_profiles" / "Woody.json").exists()  # retried after the malformed body
    profiles = json.loads((base / "profiles.json").read_text(encoding="utf-8"))
    assert set(profiles) == {"Woody", "孙悟空"}
    assert any("Buzz Lightyear: no detailed profile" in s for s in report.skipped)


def test_gen_profiles_resumes_after_a_stop(mmrole_data, profile_root, tmp_path):
    genuine = GenuineProfiles(mmrole_data)
    with OpenAIStub(genuine) as stub:
        run_profiles(stub, profile_root, tmp_path / "whole")
        stopped = run_profiles(stub, profile_root, tmp_path / "resumed", max_items=2)
        assert stopped.stages["detailed profiles"].stopped_early
        calls_before = len(stub.completion_requests)
        resumed = run_profiles(stub, profile_root, tmp_path / "resumed")
        calls = len(stub.completion_requests) - calls_before
    assert resumed.stages["detailed profiles"].already_done == 2
    assert calls == 3 + 5  # the 3 remaining detailed profiles and all 5 condensed: nothing twice
    assert output_files(tmp_path / "resumed") == output_files(tmp_path / "whole")


# --- dialogues -----------------------------------------------------------------------------------

class GenuineDialogues:
    """Answers dialogue requests with the released GPT-4 dialogues of the requested character (those
    of 8-16 turns: what the default 6 rounds, give or take 2, accept)."""

    MARKERS = {"comment": "comment", "human-role": "human-role", "inter-role": "inter-role"}

    def __init__(self, data_root: Path):
        self.dialogues = data_root / "dialogues" / "in-distribution"
        self.bad = {}  # (type, character) -> reply given on the first n attempts: [reply, n]

    def records(self, dialogue_type, name):
        records = []
        for source in ("COCO", "script"):
            path = self.dialogues / dialogue_type / f"{name_stem(name)}_{source}.json"
            if path.is_file():
                records += [r for r in json.loads(path.read_text(encoding="utf-8"))
                            if 8 <= len(r.get("conversations") or []) <= 16
                            or (dialogue_type == "comment" and len(r.get("conversations") or []) == 2)]
        return records

    def __call__(self, request):
        text = request.user_text
        name = re.search(r"\[Profile of (.+?) Start\]", text).group(1)
        dialogue_type = ("comment" if "A curious human shows" in text else
                         "human-role" if "between a curious human and" in text else "inter-role")
        bad = self.bad.get((dialogue_type, name))
        if bad and bad[1] > 0:
            bad[1] -= 1
            return bad[0]
        records = self.records(dialogue_type, name)
        record = records[zlib.crc32(request.image_urls[0][-200:].encode()) % len(records)]
        turns = record["conversations"]
        if dialogue_type == "comment":
            return turns[1]["value"]
        if dialogue_type == "inter-role":  # the genuine dialogue, its partner renamed to the one asked for
            partner = re.search(r"between (.+?) from .+? and " + re.escape(name) + " about", text).group(1)
            old = next(t["role"] for t in turns if t["role"] != name)
            turns = [{"role": partner if t["role"] == old else t["role"], "value": t["value"]} for t in turns]
        return json.dumps(turns, ensure_ascii=False)


class ShortReplies:
    """Short valid replies in the requested shape for the synthetic trees: a monologue, or as many
    turns as the prompt asks for (`turns` overrides that count)."""

    def __init__(self, turns=None):
        self.turns = turns

    def __call__(self, request):
        text = request.user_text
        name = re.search(r"\[Profile of (.+?) Start\]", text).group(1)
        chinese = "in Chinese" in text
        if "A curious human shows" in text:  # as long as the released commentaries (the generator's shape rule)
            if chinese:
                return ("这幅画让俺想起了花果山，山上的猴儿们整天在树上跳来跳去，好不快活。俺老孙当年在那里称王称霸，"
                        "天不怕地不怕。如今看到这画，心里又想起了那些兄弟们，真想回去看看他们。")
            return (f"Well, this picture reminds {name} of home, of the long afternoons and the friends who made them "
                    "bright. Look at the light on the left, the way it falls across everything as if nothing could go "
                    "wrong today. I could stand here a good while and just remember how it felt.")
        first = "human" if "between a curious human and" in text else re.search(r"between (.+?) from", text).group(1)
        count = self.turns or int(re.search(r"\((\d+) turns in all\)", text).group(1))
        line = "第{}句：你看那边的山。" if chinese else "Turn {}: look at that."
        return json.dumps([{"role": first if i % 2 == 0 else name, "value": line.format(i)} for i in range(count)],
                          ensure_ascii=False)


@pytest.fixture
def coco_dir(tmp_path):
    from PIL import Image

    folder = tmp_path / "coco"
    folder.mkdir()
    for i, color in enumerate(("red", "green", "blue")):
        Image.new("RGB", (16, 16), color).save(folder / f"00000000000{i}.jpg", format="JPEG")
    return folder


def run_dialogues(stub, data_root, out, coco_dir, client=None, **options):
    options = {"characters": ["Woody", "孙悟空"], "coco_per_character": 2, "script_per_character": 2, **options}
    return generate_dialogues(client or make_client(stub), DialogueOptions(
        data_root, output_dir=out, coco_dir=coco_dir, progress=False, **options), log=lambda line: None)


def test_gen_dialogues_end_to_end(mmrole_data, coco_dir, tmp_path):
    out = tmp_path / "out"
    with OpenAIStub(GenuineDialogues(mmrole_data)) as stub:
        report = run_dialogues(stub, mmrole_data, out, coco_dir)
        requests = stub.completion_requests
    assert not report.summary.failed and report.summary.finished == 2 * 3 * 4
    assert len(requests) == 24
    assert {r.model for r in requests} == {MODEL} and {r.system_prompt for r in requests} == {DIALOGUE_SYSTEM}
    assert all(r.has_image_data_url and len(r.image_urls) == 1 for r in requests)

    base = out / "dialogues" / "in-distribution"
    for dialogue_type, marker in (("comment", "comment"), ("human-role", "human-role-dialogue"),
                                  ("inter-role", "role-role-dialogue")):
        for name, stem in (("Woody", "Woody"), ("孙悟空", "孙悟空")):
            for source in ("COCO", "script"):
                records = json.loads((base / dialogue_type / f"{stem}_{source}.json").read_text(encoding="utf-8"))
                assert [r["id"] for r in records] == [f"{stem}_{marker}_{source}_{k}" for k in (0, 1)]
                for record in records:
                    assert record["generator"] == {"prompt_version": PROMPT_VERSION, "model": MODEL}
                    if source == "script":  # the image on disk (Toy_Story), annotated (as Toy_story)
                        assert record["image"].split("/")[0] in ("Toy_Story", "西游记") and record["role_info"]
                    else:
                        assert record["image"].startswith("COCO/train2017/") and "role_info" not in record
    # the image sent is the record's image; annotations reach the prompt of character images only
    woody = json.loads((base / "comment" / "Woody_script.json").read_text(encoding="utf-8"))[0]
    sent = next(r for r in requests if "A curious human shows Woody" in r.user_text
                and base64.b64decode(r.image_urls[0].split(",", 1)[1]) == (mmrole_data / "images" / woody["image"]).read_bytes())
    assert "The auxiliary information of the image is as follows:" in sent.user_text
    assert woody["conversations"][0] == {"from": "human", "value": woody["conversations"][0]["value"]}
    assert woody["conversations"][0]["value"] in COMMENT_QUESTIONS["English"]
    assert woody["conversations"][0]["value"] in sent.user_text
    coco_requests = [r for r in requests if r.image_urls[0].startswith("data:image/jpeg") and "auxiliary" not in r.user_text]
    assert len(coco_requests) == 12
    wukong = json.loads((base / "comment" / "孙悟空_COCO.json").read_text(encoding="utf-8"))
    assert all(r["conversations"][0]["value"] in COMMENT_QUESTIONS["Chinese"] for r in wukong)
    partners = {t["role"] for r in json.loads((base / "inter-role" / "Woody_COCO.json").read_text(encoding="utf-8"))
                for t in r["conversations"]}
    assert partners == {"Woody", "Buzz Lightyear"}
    # build_data reads what was generated without skipping anything of it
    result = build(BuildOptions(mmrole_data, tmp_path / "built", test_ids=[], dialogues_root=out), log=lambda s: None)
    assert not result.skips and result.train == sum(
        len(r["conversations"]) if t == "inter-role" else len(r["conversations"]) // 2
        for t in ("comment", "human-role", "inter-role") for p in (base / t).glob("*.json")
        for r in json.loads(p.read_text(encoding="utf-8")))


def test_gen_dialogues_retries_malformed_replies_and_reports_failures(mmrole_data, coco_dir, tmp_path):
    genuine = GenuineDialogues(mmrole_data)
    genuine.bad[("human-role", "Woody")] = ['[{"role": "human", "value": "Hi Woody!"}, {"role": "Woody", "val', 1]
    genuine.bad[("comment", "孙悟空")] = ["As an AI language model, I cannot see this image.", 1]
    genuine.bad[("inter-role", "孙悟空")] = [json.dumps([{"role": "Iron Man", "value": "Hey!"},
                                                         {"role": "孙悟空", "value": "何方妖怪？"}]), 99]
    with OpenAIStub(genuine, timeout_delay=1.0) as stub:
        for marker, fault in (("A curious human shows Woody", Fault.RATE_LIMIT),
                              ("between a curious human and Woody", Fault.TIMEOUT),
                              ("between a curious human and 孙悟空", Fault.MALFORMED_JSON),
                              ("and Woody about", Fault.INCOMPLETE)):
            stub.fail_when(lambda r, marker=marker: marker in r.user_text, fault)  # once each
        report = run_dialogues(stub, mmrole_data, tmp_path / "out", coco_dir,
                               client=make_client(stub, timeout=0.5, concurrency=2))
    failed = report.summary.failed
    assert len(failed) == 4 and all("孙悟空_role-role-dialogue_" in f and "unknown_speaker" in f for f in failed)
    assert report.summary.finished == 20
    assert sorted(r.fault for r in stub.completion_requests if r.fault) == sorted(
        [Fault.RATE_LIMIT, Fault.TIMEOUT, Fault.MALFORMED_JSON, Fault.INCOMPLETE])
    base = tmp_path / "out" / "dialogues" / "in-distribution"
    assert not (base / "inter-role" / "孙悟空_COCO.json").exists()
    assert not (base / "inter-role" / "孙悟空_script.json").exists()
    for path in base.rglob("*.json"):  # nothing malformed was written
        for record in json.loads(path.read_text(encoding="utf-8")):
            texts = " ".join(t["value"] for t in record["conversations"])
            assert "As an AI" not in texts and "Iron Man" not in texts and "Hi Woody!" not in texts


def test_gen_dialogues_resumes_after_a_stop_and_a_kill(mmrole_data, coco_dir, tmp_path, monkeypatch):
    with OpenAIStub(GenuineDialogues(mmrole_data)) as stub:
        run_dialogues(stub, mmrole_data, tmp_path / "whole", coco_dir)
        stopped = run_dialogues(stub, mmrole_data, tmp_path / "resumed", coco_dir, max_items=5)
        assert stopped.summary.stopped_early and stopped.summary.finished == 5

        appended = []
        original_append = Journal.append

        def killed_after_four(self, record):
            if len(appended) == 4:
                raise KeyboardInterrupt  # as if the process were killed here
            appended.append(record["key"])
            original_append(self, record)

        monkeypatch.setattr(Journal, "append", killed_after_four)
        with pytest.raises(KeyboardInterrupt):
            run_dialogues(stub, mmrole_data, tmp_path / "resumed", coco_dir)
        monkeypatch.setattr(Journal, "append", original_append)
        before = len(stub.completion_requests)
        resumed = run_dialogues(stub, mmrole_data, tmp_path / "resumed", coco_dir)
        calls = len(stub.completion_requests) - before
    assert resumed.summary.already_done == 4 and resumed.summary.finished == 24 - 5 - 4
    assert calls == 24 - 5 - 4  # each finished dialogue was asked for once, the items in flight again
    assert output_files(tmp_path / "resumed") == output_files(tmp_path / "whole")


def test_gen_dialogues_skips_an_annotated_image_that_is_absent(mmrole_data, coco_dir, tmp_path):
    root = tmp_path / "raw"
    shutil.copytree(mmrole_data / "profiles", root / "profiles")
    shutil.copytree(mmrole_data / "images" / "Toy_Story", root / "images" / "Toy_Story")
    shutil.copy(mmrole_data / "images" / "annotations.json", root / "images" / "annotations.json")
    (root / "images" / "Toy_Story" / "02.jpg").unlink()
    with OpenAIStub(GenuineDialogues(mmrole_data)) as stub:
        report = run_dialogues(stub, root, tmp_path / "out", coco_dir, characters=["Woody"], types=["comment"],
                               script_per_character=None, coco_per_character=0)
    absent = [s for s in report.skipped if "Toy_story/02.jpg" in s]
    assert len(absent) == 1 and "annotations.json" in absent[0] and "listed but absent" in absent[0]
    records = json.loads((tmp_path / "out" / "dialogues" / "in-distribution" / "comment" / "Woody_script.json")
                         .read_text(encoding="utf-8"))
    toy_images = sorted(p.name for p in (root / "images" / "Toy_Story").glob("*.jpg"))
    assert [r["image"] for r in records] == [f"Toy_Story/{n}" for n in toy_images]  # the rest goes on
    assert [r["id"] for r in records] == [f"Woody_comment_script_{k}" for k in range(len(toy_images))]


def test_generator_clis(profile_root, tmp_path, monkeypatch, capsys):
    dialogues_main = load_script("data_prep/gen_dialogues.py").main
    profiles_main = load_script("data_prep/gen_profiles.py").main

    for main in (profiles_main, dialogues_main):
        with pytest.raises(SystemExit):
            main(["--help"])
        help_text = capsys.readouterr().out
        assert "--model" in help_text and "--max_items" in help_text and "OPENAI_API_KEY" in help_text
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert profiles_main(["--data_root", str(profile_root), "--model", "gpt-4o", "--no_progress"]) == 2  # usage
    assert "OPENAI_API_KEY" in capsys.readouterr().err


def test_gen_dialogues_out_of_distribution_layout(tmp_path, coco_dir):
    from tests.support.raw_data import make_raw_tree

    root = tmp_path / "raw"
    make_raw_tree(root)
    with OpenAIStub(ShortReplies()) as stub:
        report = generate_dialogues(make_client(stub), DialogueOptions(
            root, split="out-of-distribution", output_dir=tmp_path / "out", coco_dir=coco_dir, rounds=2,
            progress=False), log=lambda line: None)
    assert report.summary.finished == 2 * 3 * 2 and not report.summary.failed
    base = tmp_path / "out" / "dialogues" / "out-of-distribution"
    assert sorted(p.name for p in base.iterdir()) == ["comment.json", "human-role.json", "inter-role.json"]
    records = json.loads((base / "inter-role.json").read_text(encoding="utf-8"))
    assert [r["id"] for r in records] == ["Sheldon_Cooper_role-role-dialogue_COCO", "Sheldon_Cooper_role-role-dialogue_script",
                                          "Penny_role-role-dialogue_COCO", "Penny_role-role-dialogue_script"]
    assert records[1]["image"].startswith("The_Big_Bang_Theory/") and records[0]["image"].startswith("COCO/")


# --- profiles: failures, validation and bad input ------------------------------------------------

def test_a_failed_people_batch_is_reported_and_everyone_else_goes_on(mmrole_data, profile_root, tmp_path):
    genuine = GenuineProfiles(mmrole_data)
    people = [p["name"] for p in genuine.people]
    base = tmp_path / "out" / "profiles" / "in-distribution"
    lines = []
    with OpenAIStub(genuine) as stub:
        stub.fail_when(lambda r: r.user_text.startswith("Invent "), Fault.SERVER_ERROR, times=3)  # batch 0, every attempt
        report = run_profiles(stub, profile_root, tmp_path / "out", log_lines=lines)
        first_run = len(stub.completion_requests)
        profiled = set(json.loads((base / "profiles.json").read_text(encoding="utf-8")))
        rerun = run_profiles(stub, profile_root, tmp_path / "out")
        rerun_requests = stub.completion_requests[first_run:]
    stage = report.stages["hypothetical people"]
    assert (stage.finished, len(stage.failed)) == (1, 1) and report.failed == 1
    assert "batch 0" in stage.failed[0] and "meta_info_hypo" in stage.failed[0] and "HTTP 500" in stage.failed[0]
    assert any("batch 0" in line and "rerun" in line for line in lines)
    # the named characters and the person of batch 1 got their profiles all the same
    assert report.new_people == [people[0]]
    assert report.stages["condensed profiles"].finished == 4
    assert profiled == {"Woody", "Buzz Lightyear", "孙悟空", people[0]}
    # the rerun asks for batch 0 only, avoiding the name batch 1 already took, then expands that person
    invents = [r for r in rerun_requests if r.user_text.startswith("Invent ")]
    assert len(invents) == 1 and people[0] in invents[0].user_text.split("Do not reuse these names: ")[1]
    assert len(rerun_requests) == 1 + 2 and not rerun.failed
    roles = json.loads((base / "roles.json").read_text(encoding="utf-8"))
    assert sorted(roles["Hypothetical Characters"]) == sorted(people[:2])
    assert len(json.loads((base / "profiles.json").read_text(encoding="utf-8"))) == 5


def test_profile_replies_need_the_right_language_and_every_section(mmrole_data, profile_root, tmp_path):
    genuine = GenuineProfiles(mmrole_data)
    woody = genuine.condensed["Woody"]
    no_catchphrases = woody.replace("**Catchphrases**", "**Favourite Places**")
    asked = {"woody": 0}

    def responder(request):
        text = request.user_text
        if text.startswith("Below is source material about 孙悟空"):  # always English: never usable
            return json.dumps(genuine.detailed("Woody"))
        if text.startswith("Here is a detailed profile of Woody"):
            asked["woody"] += 1
            return no_catchphrases if asked["woody"] == 1 else woody
        return genuine(request)

    with OpenAIStub(responder) as stub:
        report = generate_profiles(make_client(stub), ProfileOptions(profile_root, output_dir=tmp_path / "out",
                                                                     progress=False), log=lambda line: None)
    base = tmp_path / "out" / "profiles" / "in-distribution"
    failed = report.stages["detailed profiles"].failed
    assert len(failed) == 1 and "孙悟空" in failed[0] and "wrong language" in failed[0] and "Chinese expected" in failed[0]
    assert not (base / "detailed_profiles" / "孙悟空.json").exists()
    assert asked["woody"] == 2  # the reply without a catchphrases heading was retried
    profiles = json.loads((base / "profiles.json").read_text(encoding="utf-8"))
    assert profiles["Woody"] == woody.strip() and "孙悟空" not in profiles


def test_condensed_validator_accepts_every_released_profile_and_nothing_incomplete(mmrole_data):
    from mmrole.backends.client import Completion, MalformedResponse
    from mmrole.data.generate.profiles import condensed_validator
    from mmrole.common.prompts import language_of

    def reply(text):
        return Completion(key=None, text=text, finish_reason="stop", model=MODEL)

    base = mmrole_data / "profiles" / "in-distribution"
    profiles = json.loads((base / "profiles.json").read_text(encoding="utf-8"))
    roles = json.loads((base / "roles.json").read_text(encoding="utf-8"))
    language = {name: language_of(script) for script, names in roles.items() for name in names}
    assert len(profiles) == 72
    for name, text in profiles.items():
        assert condensed_validator(language[name])(reply(text)) == text.strip(), name
    woody, wukong = profiles["Woody"], profiles["孙悟空"]
    with pytest.raises(MalformedResponse, match="catchphrases"):
        condensed_validator("English")(reply(woody.replace("**Catchphrases**", "**Favourite Places**")))
    with pytest.raises(MalformedResponse, match="section headings"):
        condensed_validator("English")(reply(woody[:woody.index("**Catchphrases**")]))
    with pytest.raises(MalformedResponse, match="English expected"):
        condensed_validator("English")(reply(wukong))
    with pytest.raises(MalformedResponse, match="Chinese expected"):
        condensed_validator("Chinese")(reply(woody))


def test_gen_profiles_skips_unusable_inputs_and_goes_on(mmrole_data, profile_root, tmp_path):
    source = profile_root / "profiles" / "in-distribution"
    out = tmp_path / "out"
    target = out / "profiles" / "in-distribution"
    (source / "raw_info_en" / "Buzz_Lightyear.txt").unlink()
    write_json(source / "roles.json", {"Toy Story": ["Woody", "Buzz Lightyear"], "西游记": ["孙悟空"],
                                       "Hypothetical Characters": ["Ada Quill"]})
    (source / "meta_info_hypo").mkdir()
    (source / "meta_info_hypo" / "Ada_Quill.json").write_text('{"name": "Ada Quill", "age": ', encoding="utf-8")
    (target / "detailed_profiles").mkdir(parents=True)
    (target / "detailed_profiles" / "Woody.json").write_text('{"introduction": "Sheriff', encoding="utf-8")
    with OpenAIStub(GenuineProfiles(mmrole_data)) as stub:
        report = generate_profiles(make_client(stub), ProfileOptions(profile_root, output_dir=out, progress=False),
                                   log=lambda line: None)
        requests = stub.completion_requests
    skipped = {s.split(": ")[1]: s for s in report.skipped if "no detailed profile," not in s}
    assert set(skipped) == {"Buzz Lightyear", "Ada Quill", "Woody"}
    assert skipped["Buzz Lightyear"].startswith(str(source / "raw_info_en" / "Buzz_Lightyear.txt"))
    assert "no source text" in skipped["Buzz Lightyear"]
    assert skipped["Ada Quill"].startswith(str(source / "meta_info_hypo" / "Ada_Quill.json"))
    assert "malformed JSON" in skipped["Ada Quill"]
    assert skipped["Woody"].startswith(str(target / "detailed_profiles" / "Woody.json")) and "malformed JSON" in skipped["Woody"]
    assert f"skipped: {len(report.skipped)}" in report.lines()
    # the rest goes on: 孙悟空 gets both profiles; the damaged file is left as it was
    assert [r.user_text[:40] for r in requests] == ["Below is source material about 孙悟空 from 西游记.\n\n[So"[:40],
                                                    "Here is a detailed profile of 孙悟空 from 西游记:\n\n[intr"[:40]]
    assert set(json.loads((target / "profiles.json").read_text(encoding="utf-8"))) == {"孙悟空"}
    assert (target / "detailed_profiles" / "Woody.json").read_text(encoding="utf-8") == '{"introduction": "Sheriff'


def test_gen_profiles_stops_before_any_call_when_profiles_json_is_damaged(mmrole_data, profile_root, tmp_path):
    from mmrole.data.raw import RawDataError

    damaged = tmp_path / "out" / "profiles" / "in-distribution" / "profiles.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text('{"Woody": "### Brief', encoding="utf-8")
    with OpenAIStub(GenuineProfiles(mmrole_data)) as stub:
        with pytest.raises(RawDataError, match=re.escape(str(damaged))):
            generate_profiles(make_client(stub), ProfileOptions(profile_root, output_dir=tmp_path / "out",
                                                                progress=False), log=lambda line: None)
        assert not stub.completion_requests  # nothing spent, nothing overwritten
    assert damaged.read_text(encoding="utf-8") == '{"Woody": "### Brief'


def test_progress_bars_report_each_stage(mmrole_data, profile_root, tmp_path, capsys):
    with OpenAIStub(GenuineProfiles(mmrole_data)) as stub:
        generate_profiles(make_client(stub), ProfileOptions(profile_root, output_dir=tmp_path / "out",
                                                            num_hypothetical=2, hypothetical_batch=1),
                          log=lambda line: None)
    err = capsys.readouterr().err
    for stage, total in (("hypothetical people", 2), ("detailed profiles", 5), ("condensed profiles", 5)):
        assert re.search(rf"{stage}: 100%.*{total}/{total} \[.*call/s\]", err), stage


# --- dialogues: rounds, bad input, lazy requests -------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    from tests.support.raw_data import make_raw_tree

    root = tmp_path / "raw"
    make_raw_tree(root)
    return root


def test_rounds_set_the_turn_count_a_reply_must_have(tree, coco_dir, tmp_path, capsys):
    def run(stub, out, **options):
        lines = []
        report = generate_dialogues(make_client(stub), DialogueOptions(
            tree, output_dir=out, coco_dir=coco_dir, characters=["Woody"], types=["human-role"],
            coco_per_character=1, script_per_character=0, progress=False, **options), log=lines.append)
        return report, lines

    with OpenAIStub(ShortReplies(turns=8)) as stub:  # 4 rounds where 3 were asked for
        report, _ = run(stub, tmp_path / "strict", rounds=3, rounds_tolerance=0)
    assert len(report.summary.failed) == 1 and "dialogue_length: 8 turns, bounds 6..6" in report.summary.failed[0]
    with OpenAIStub(ShortReplies()) as stub:  # as many turns as asked for, beyond the filter's default 40
        report, lines = run(stub, tmp_path / "long", rounds=25)
        assert "(50 turns in all)" in stub.completion_requests[0].user_text
    assert report.summary.finished == 1 and not report.summary.failed
    record = json.loads((tmp_path / "long" / "dialogues" / "in-distribution" / "human-role" / "Woody_COCO.json")
                        .read_text(encoding="utf-8"))[0]
    assert len(record["conversations"]) == 50
    assert any("--dialogue_turns 46 54" in line for line in lines)  # how to filter such dialogues

    parse_args = load_script("data_prep/gen_dialogues.py").parse_args
    for bad in (["--rounds", "0"], ["--rounds_tolerance", "-1"], ["--rounds", "six"]):
        with pytest.raises(SystemExit):
            parse_args(["--data_root", str(tree), "--model", MODEL, *bad])
        assert bad[0] in capsys.readouterr().err


def test_gen_dialogues_skips_unusable_inputs_and_goes_on(tree, coco_dir, tmp_path):
    from tests.support.raw_data import edit_json

    edit_json(tree / "profiles" / "in-distribution" / "profiles.json", lambda p: p.pop("Buzz Lightyear"))
    out = tmp_path / "out"
    damaged = out / "dialogues" / "in-distribution" / "comment" / "孙悟空_COCO.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text('[{"id": "孙悟空_comment_COCO_0", "image": ', encoding="utf-8")
    with OpenAIStub(ShortReplies()) as stub:
        report = generate_dialogues(make_client(stub), DialogueOptions(
            tree, output_dir=out, coco_dir=coco_dir, characters=["Woody", "Buzz Lightyear", "孙悟空"],
            types=["comment", "inter-role"], coco_per_character=1, script_per_character=1, rounds=2,
            progress=False), log=lambda line: None)
    profiles = tree / "profiles" / "in-distribution" / "profiles.json"
    assert sorted(report.skipped) == sorted([
        f"{profiles}: Buzz Lightyear: no profile: no comment dialogues",
        f"{profiles}: Buzz Lightyear: no profile: no inter-role dialogues",
        *(f"{tree / 'profiles' / 'in-distribution' / 'roles.json'}: Woody_role-role-dialogue_{source}_0: no other "
          "character with a profile in 'Toy Story' to talk with" for source in ("COCO", "script")),
        f"{damaged}: 孙悟空_comment_COCO_0: not generated, the output file cannot be read (malformed JSON at line 1 "
        "column 40: Expecting value): repair or move it, then rerun",
    ])
    assert "skipped: 5" in report.lines()
    assert sorted(p.id for p in report.planned) == sorted([
        "Woody_comment_COCO_0", "Woody_comment_script_0", "孙悟空_comment_script_0",
        "孙悟空_role-role-dialogue_COCO_0", "孙悟空_role-role-dialogue_script_0"])
    assert report.summary.finished == 5 and not report.summary.failed
    assert damaged.read_text(encoding="utf-8") == '[{"id": "孙悟空_comment_COCO_0", "image": '  # never overwritten
    partners = {t["role"] for t in json.loads((damaged.parent.parent / "inter-role" / "孙悟空_COCO.json")
                                               .read_text(encoding="utf-8"))[0]["conversations"]}
    assert partners == {"孙悟空", "猪八戒"}


def test_gen_dialogues_without_annotations_makes_coco_dialogues_only(tree, coco_dir, tmp_path):
    (tree / "images" / "annotations.json").unlink()
    with OpenAIStub(ShortReplies()) as stub:
        report = generate_dialogues(make_client(stub), DialogueOptions(
            tree, output_dir=tmp_path / "out", coco_dir=coco_dir, characters=["Woody"], types=["comment"],
            coco_per_character=2, progress=False), log=lambda line: None)
    assert len(report.skipped) == 1
    assert report.skipped[0].startswith(f"{tree / 'images' / 'annotations.json'}: *: not found")
    assert "no character-image dialogues" in report.skipped[0]
    base = tmp_path / "out" / "dialogues" / "in-distribution" / "comment"
    assert sorted(p.name for p in base.iterdir()) == ["Woody_COCO.json"]
    assert [r["id"] for r in json.loads((base / "Woody_COCO.json").read_text(encoding="utf-8"))] == [
        "Woody_comment_COCO_0", "Woody_comment_COCO_1"]


def test_images_are_encoded_only_for_requests_sent(tree, coco_dir, tmp_path, monkeypatch):
    import threading

    import mmrole.backends.client

    encoded = []
    original = mmrole.backends.client.image_data_url

    def counting(path):
        encoded.append((Path(path).name, threading.current_thread().name))
        return original(path)

    monkeypatch.setattr(mmrole.backends.client, "image_data_url", counting)
    options = dict(output_dir=tmp_path / "out", coco_dir=coco_dir, characters=["Woody", "Buzz Lightyear"],
                   types=["comment"], coco_per_character=3, script_per_character=2, progress=False)
    with OpenAIStub(ShortReplies()) as stub:
        stopped = generate_dialogues(make_client(stub), DialogueOptions(tree, max_items=3, **options),
                                     log=lambda line: None)
        assert len(encoded) == len(stub.completion_requests)  # the calls cancelled at the stop read no image
        encoded.clear()
        before = len(stub.completion_requests)
        resumed = generate_dialogues(make_client(stub), DialogueOptions(tree, **options), log=lambda line: None)
        sent = len(stub.completion_requests) - before
    assert stopped.summary.finished == 3 and resumed.summary.finished == 10 - 3
    assert len(encoded) == sent == 7  # nothing read for the 3 dialogues already done
    assert all(thread.startswith("chat") for _, thread in encoded)  # read by the worker sending the request


# --- the command lines -----------------------------------------------------------------------------

CLI_KEY = "sk-cli-e2e-0123456789abcdefSECRET"


def priced(responder, prompt_tokens=1000, completion_tokens=500):
    return lambda request: StubReply(responder(request), prompt_tokens=prompt_tokens,
                                     completion_tokens=completion_tokens)


def assert_key_nowhere(texts, folder):
    for text in texts:
        assert CLI_KEY not in text and "0123456789abcdef" not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert b"0123456789abcdef" not in path.read_bytes(), path


def test_gen_profiles_command_line_end_to_end(mmrole_data, profile_root, tmp_path, monkeypatch, capsys):
    main = load_script("data_prep/gen_profiles.py").main

    monkeypatch.setenv("OPENAI_API_KEY", CLI_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    out = tmp_path / "out"
    with OpenAIStub(priced(GenuineProfiles(mmrole_data))) as stub:
        # a 400 for this request only (a 401 stops the whole run: test_a_refused_key_stops_the_generator_at_once)
        stub.fail_when(lambda r: r.user_text.startswith("Below is source material about 孙悟空"), Fault.BAD_REQUEST)
        code = main(["--data_root", str(profile_root), "--output_dir", str(out), "--model", MODEL,
                     "--base_url", stub.base_url, "--num_hypothetical", "1", "--concurrency", "2",
                     "--price_input", "2.5", "--price_output", "10", "--no_progress"])
        requests = stub.completion_requests
    printed = capsys.readouterr()
    assert code == 3  # finished, one character failed
    assert {r.authorization for r in requests} == {f"Bearer {CLI_KEY}"}  # the key came from the environment
    assert len(requests) == 1 + 4 + 3  # people; detailed x4 (孙悟空 refused); condensed x3
    assert "8 calls (7 ok, 1 failed)" in printed.out
    assert "tokens: 7000 in / 3500 out, cost $0.0525" in printed.out  # 7 x (1000 x 2.5 + 500 x 10) / 1e6
    assert any("failed:" in line and "孙悟空" in line and "HTTP 400" in line for line in printed.out.splitlines())
    base = out / "profiles" / "in-distribution"
    assert len(list((base / "detailed_profiles").glob("*.json"))) == 3
    assert len(json.loads((base / "profiles.json").read_text(encoding="utf-8"))) == 3
    assert_key_nowhere([printed.out, printed.err], out)


def test_gen_dialogues_command_line_end_to_end(tree, coco_dir, tmp_path, monkeypatch, capsys):
    main = load_script("data_prep/gen_dialogues.py").main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("MMROLE_TEST_KEY", CLI_KEY)
    out = tmp_path / "out"
    with OpenAIStub(priced(ShortReplies())) as stub:
        code = main(["--data_root", str(tree), "--output_dir", str(out), "--model", MODEL, "--base_url", stub.base_url,
                     "--api_key_env", "MMROLE_TEST_KEY", "--characters", "Woody", "--types", "comment", "human-role",
                     "--coco_dir", str(coco_dir), "--coco_per_character", "1", "--script_per_character", "1",
                     "--rounds", "2", "--price_input", "1", "--price_output", "2", "--no_progress"])
        requests = stub.completion_requests
    printed = capsys.readouterr()
    assert code == 0
    assert len(requests) == 4 and {r.authorization for r in requests} == {f"Bearer {CLI_KEY}"}
    assert "dialogues: 4 planned, 0 already done, 4 generated now, 0 failed" in printed.out
    assert "tokens: 4000 in / 2000 out, cost $0.0080" in printed.out  # 4 x (1000 x 1 + 500 x 2) / 1e6
    base = out / "dialogues" / "in-distribution"
    assert sorted(str(p.relative_to(base)) for p in base.rglob("*.json")) == [
        "comment/Woody_COCO.json", "comment/Woody_script.json", "human-role/Woody_COCO.json",
        "human-role/Woody_script.json"]
    assert_key_nowhere([printed.out, printed.err], out)


@pytest.mark.parametrize("fault, status", [(Fault.UNAUTHORIZED, "HTTP 401"), (Fault.UNKNOWN_MODEL, "HTTP 404")])
def test_a_refused_key_stops_the_generator_at_once(tree, coco_dir, tmp_path, monkeypatch, capsys, fault, status):
    """A 401 (whose message quotes the key, as OpenAI's does) or an unknown model: one message, exit status 2,
    at most the requests already in flight (--concurrency 2) reach the server, none is retried, the key is
    nowhere."""
    main = load_script("data_prep/gen_dialogues.py").main

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("MMROLE_TEST_KEY", CLI_KEY)
    out = tmp_path / "out"
    with OpenAIStub(ShortReplies()) as stub:
        stub.fail_when(lambda r: True, fault, times=1000)
        code = main(["--data_root", str(tree), "--output_dir", str(out), "--model", MODEL, "--base_url", stub.base_url,
                     "--api_key_env", "MMROLE_TEST_KEY", "--coco_dir", str(coco_dir), "--concurrency", "2",
                     "--no_progress"])
        requests = stub.completion_requests
    printed = capsys.readouterr()
    assert code == 2
    assert 1 <= len(requests) <= 2
    errors = [line for line in printed.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and status in errors[0] and "stopped at once" in errors[0]
    assert "failed:" not in printed.out  # no line per dialogue
    assert_key_nowhere([printed.out, printed.err], out)


# --- rejected replies, commentary shape, damaged images -------------------------------------------

ONE_LINE = "Ah, what a sight! This reminds me of day 95 of my long journey."


class OneLineCommentaries(ShortReplies):
    """A one-line commentary (the issue's example) for every commentary request."""

    def __call__(self, request):
        if "A curious human shows" in request.user_text:
            return ONE_LINE
        return super().__call__(request)


def test_commentaries_get_the_released_shape():
    from mmrole.data.generate.dialogues import commentary_shape_problem

    assert commentary_shape_problem(ONE_LINE, "English") == \
        "commentary too short: 63 characters, at least 200 expected"
    three = "This is a sentence about the picture and what it means to me today. " * 3
    assert commentary_shape_problem(three.strip(), "English") is None
    assert commentary_shape_problem("x" * 300, "English") == "commentary of 1 sentence(s), at least 3 expected"
    assert commentary_shape_problem("这幅画让俺想起了花果山。" * 8, "Chinese") is None
    assert commentary_shape_problem("这幅画让俺想起了花果山，" * 8, "Chinese").startswith("commentary of 1 sentence")


def test_rejected_items_are_journaled_and_asked_again_only_when_asked(tree, coco_dir, tmp_path):
    options = dict(output_dir=tmp_path / "out", coco_dir=coco_dir, characters=["Woody"], types=["comment"],
                   coco_per_character=1, script_per_character=1, progress=False)
    with OpenAIStub(OneLineCommentaries()) as stub:
        first = generate_dialogues(make_client(stub), DialogueOptions(tree, **options), log=lambda line: None)
        assert len(stub.completion_requests) == 2 * 3  # two commentaries, every attempt (3) rejected
        assert len(first.summary.failed) == 2 and first.not_done == 2
        assert all("commentary too short: 63 characters" in failure for failure in first.summary.failed)
        stub.clear()
        second = generate_dialogues(make_client(stub), DialogueOptions(tree, **options), log=lambda line: None)
        assert stub.completion_requests == []  # not paid for again
        assert len(second.summary.rejected_before) == 2 and second.not_done == 2
        assert "2 rejected earlier (not asked again: --retry_rejected)" in second.lines()[0]
        stub.responder = ShortReplies()
        third = generate_dialogues(make_client(stub), DialogueOptions(tree, retry_rejected=True, **options),
                                   log=lambda line: None)
        assert len(stub.completion_requests) == 2 and third.summary.finished == 2 and third.not_done == 0
    written = json.loads((tmp_path / "out" / "dialogues" / "in-distribution" / "comment" / "Woody_COCO.json")
                         .read_text(encoding="utf-8"))
    assert [len(r["conversations"][1]["value"]) >= 200 for r in written] == [True]


def test_gen_dialogues_cli_exit_status_with_rejected_items(tree, coco_dir, tmp_path, monkeypatch, capsys):
    main = load_script("data_prep/gen_dialogues.py").main

    monkeypatch.setenv("MMROLE_TEST_KEY", CLI_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    out = tmp_path / "out"
    with OpenAIStub(OneLineCommentaries()) as stub:
        args = ["--data_root", str(tree), "--output_dir", str(out), "--model", MODEL, "--base_url", stub.base_url,
                "--api_key_env", "MMROLE_TEST_KEY", "--characters", "Woody", "--types", "comment", "--coco_dir",
                str(coco_dir), "--coco_per_character", "1", "--script_per_character", "0", "--max_attempts", "2",
                "--no_progress"]
        assert main(args) == 3 and len(stub.completion_requests) == 2
        assert main(args) == 3 and len(stub.completion_requests) == 2  # listed, not asked again
        assert "rejected earlier: " in capsys.readouterr().out
        stub.responder = ShortReplies()
        assert main(args + ["--retry_rejected"]) == 0 and len(stub.completion_requests) == 3


def test_damaged_images_are_found_before_any_request(tree, coco_dir, tmp_path):
    script_images = sorted((tree / "images" / "Toy_Story").glob("*.jpg"))
    cut = script_images[0]
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    text = coco_dir / "000000000001.jpg"
    text.write_text("a text file named .jpg", encoding="utf-8")
    with OpenAIStub(ShortReplies()) as stub:
        report = generate_dialogues(make_client(stub), DialogueOptions(
            tree, output_dir=tmp_path / "out", coco_dir=coco_dir, characters=["Woody"], types=["comment"],
            coco_per_character=3, progress=False), log=lambda line: None)
        sent = [r for r in stub.completion_requests]
    damaged = [s for s in report.skipped if "image" in s]
    assert len(damaged) == 2 and report.not_done == 2
    [bad_text] = [s for s in damaged if str(text) in s]
    assert ": Woody_comment_COCO_" in bad_text and "not an image (no image format recognised in its bytes)" in bad_text
    [bad_cut] = [s for s in damaged if str(cut) in s]
    assert "Woody_comment_script_" in bad_cut and "damaged image" in bad_cut
    assert len(sent) == len(report.planned) - 2 == report.summary.finished


def test_generator_one_line_failures_a_damaged_journal_and_a_busy_folder(tree, coco_dir, tmp_path, monkeypatch, capsys):
    """Exit status 1 with one line and no request: a journal line that is damaged and not the last (named with
    its line), an output folder another run holds (its pid named)."""
    import os

    main = load_script("data_prep/gen_dialogues.py").main
    from mmrole.common.store import FolderLock

    monkeypatch.setenv("MMROLE_TEST_KEY", CLI_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    out = tmp_path / "out"
    with OpenAIStub(ShortReplies()) as stub:
        args = ["--data_root", str(tree), "--output_dir", str(out), "--model", MODEL, "--base_url", stub.base_url,
                "--api_key_env", "MMROLE_TEST_KEY", "--characters", "Woody", "--types", "comment", "--coco_dir",
                str(coco_dir), "--coco_per_character", "3", "--script_per_character", "0", "--no_progress"]
        assert main(args + ["--max_items", "2"]) == 3  # a trial run: two made, one not yet
        journal = out / ".generation" / "gen_dialogues.in-distribution.journal.jsonl"
        first, second = journal.read_text(encoding="utf-8").splitlines()
        journal.write_text(f"{first}\n{{damaged\n{second}\n", encoding="utf-8")
        stub.clear()
        capsys.readouterr()
        assert main(args) == 1
        err = capsys.readouterr().err
        assert f"error: {journal}:2: journal line damaged" in err and "Traceback" not in err
        journal.write_text(f"{first}\n{second}\n", encoding="utf-8")
        with FolderLock(out):
            assert main(args) == 1
        assert f"another run is using it (pid {os.getpid()}" in capsys.readouterr().err
        assert stub.completion_requests == []
        assert main(args) == 0
