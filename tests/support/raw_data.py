"""Small synthetic raw MMRole-Data trees for the data_prep tests (written into tmp_path).

`make_raw_tree(root)` writes a complete raw layout (protocol §1) with two splits:
  in-distribution: "Toy Story" (Woody, Buzz Lightyear), "西游记" (孙悟空, 猪八戒) and two
    Hypothetical Characters; per character and type a COCO file and a character-image file;
  out-of-distribution: "The Big Bang Theory" (Sheldon Cooper, Penny): one file per type with one
    COCO and one character-image dialogue per character (ids without _k, as the release).
Character images exist (tiny JPEGs); COCO images do not, as in the shared raw data. The
annotations spell the Toy Story folder `Toy_story`, the dialogues `Toy_Story` (pitfalls §9).
Tests then damage single pieces to check how bad input is handled.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Dict, List

IN_ROLES = {
    "Toy Story": ["Woody", "Buzz Lightyear"],
    "西游记": ["孙悟空", "猪八戒"],
    "Hypothetical Characters": ["Maya Patel", "Liam Johnson"],
}
OUT_ROLES = {"The Big Bang Theory": ["Sheldon Cooper", "Penny"]}
SCRIPT_FOLDERS = {"Toy Story": "Toy_Story", "西游记": "西游记", "Hypothetical Characters": "Hypothetical_Characters",
                  "The Big Bang Theory": "The_Big_Bang_Theory"}
QUESTIONS = {"English": "What comes to your mind when you look at this image?", "Chinese": "这张图让你联想到了什么？"}
COCO_PER_CHARACTER = 3


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=4), encoding="utf-8")


def _line(name: str, chinese: bool, k: int, turn: int, source: str) -> str:
    picture = "照片" if source == "COCO" else "画面"
    if chinese:
        return f"{name}说：这幅{picture}真有意思，第{k}段第{turn}句，俺看了心里欢喜。"
    return f"{name} says: what a {source} picture, part {k}, line {turn}. Reminds me of the old days."


def _image(script: str, source: str, k: int) -> str:
    if source == "COCO":
        return f"COCO/train2017/{zlib.crc32(f'{script}/{k}'.encode()):012d}.jpg"
    return f"{SCRIPT_FOLDERS[script]}/{k + 1:02d}.jpg"


def _conversation(dialogue_type: str, owner: str, partner: str, chinese: bool, k: int, rounds: int,
                  source: str) -> List[dict]:
    if dialogue_type == "comment":
        return [{"from": "human", "value": QUESTIONS["Chinese" if chinese else "English"]},
                {"role": owner, "value": _line(owner, chinese, k, 1, source)}]
    first = "human" if dialogue_type == "human-role" else partner
    turns = []
    for turn in range(2 * rounds):
        speaker = first if turn % 2 == 0 else owner
        turns.append({"role": speaker, "value": _line(speaker if speaker != "human" else "Visitor", chinese, k, turn, source)})
    return turns


def _record(dialogue_type: str, script: str, owner: str, source: str, k, image: str, annotation) -> dict:
    chinese = script == "西游记"
    members = IN_ROLES.get(script) or OUT_ROLES[script]
    partner = next(m for m in members if m != owner)
    marker = {"comment": "comment", "human-role": "human-role-dialogue", "inter-role": "role-role-dialogue"}[dialogue_type]
    dialogue_id = f"{owner.replace(' ', '_')}_{marker}_{source}" + ("" if k is None else f"_{k}")
    record = {"id": dialogue_id, "image": image}
    if annotation:
        record.update({f: annotation[f] for f in ("role_info", "place_info", "scene_info")})
    record["conversations"] = _conversation(dialogue_type, owner, partner, chinese, k or 0,
                                          rounds=2 + (k or 0) % 2, source=source)
    return record


def make_raw_tree(root: Path) -> Dict[str, object]:
    """Write the tree; returns {"annotations": [...], "dialogue_ids": [...]} for the tests."""
    from PIL import Image

    annotations = []
    for script, folder in SCRIPT_FOLDERS.items():
        for k in range(2):
            image = f"{folder}/{k + 1:02d}.jpg"
            (root / "images" / folder).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * k, 90, 160)).save(root / "images" / image, format="JPEG")
            spelled = image.replace("Toy_Story", "Toy_story")  # the data's quirk
            annotations.append({"image": spelled, "role_info": f"From left to right are the heroes of {script}.",
                                "place_info": "A quiet room" if k == 0 else "", "scene_info": "They talk."})
    write_json(root / "images" / "annotations.json", annotations)
    by_image = {a["image"].lower(): a for a in annotations}
    ids = []
    for split, roles in (("in-distribution", IN_ROLES), ("out-of-distribution", OUT_ROLES)):
        base = root / "profiles" / split
        write_json(base / "roles.json", roles)
        write_json(base / "profiles.json", {name: f"### Introduction\n{name} of {script}.\n### Catchphrases\n- \"Hi!\""
                                            for script, names in roles.items() for name in names})
        out_files: Dict[str, list] = {}
        for dialogue_type in ("comment", "human-role", "inter-role"):
            for script, names in roles.items():
                for owner in names:
                    for source in ("COCO", "script"):
                        count = (COCO_PER_CHARACTER if source == "COCO" else 2) if split == "in-distribution" else 1
                        records = []
                        for k in range(count):
                            image = _image(script, source, k)
                            record = _record(dialogue_type, script, owner, source,
                                             k if split == "in-distribution" else None, image,
                                             by_image.get(image.lower()))
                            records.append(record)
                            ids.append(record["id"])
                        if split == "in-distribution":
                            path = root / "dialogues" / split / dialogue_type / f"{owner.replace(' ', '_')}_{source}.json"
                            write_json(path, records)
                        else:
                            out_files.setdefault(dialogue_type, []).extend(records)
        for dialogue_type, records in out_files.items():
            write_json(root / "dialogues" / split / f"{dialogue_type}.json", records)
    return {"annotations": annotations, "dialogue_ids": ids}


def dialogue_file(root: Path, dialogue_type: str, owner: str, source: str) -> Path:
    return root / "dialogues" / "in-distribution" / dialogue_type / f"{owner.replace(' ', '_')}_{source}.json"


def edit_json(path: Path, change) -> None:
    """Apply change(obj), which edits obj in place, to a JSON file."""
    obj = json.loads(path.read_text(encoding="utf-8"))
    change(obj)
    write_json(path, obj)


def raw_records(data_root: Path):
    """Every dialogue record under data_root/dialogues by id, read with plain json (an oracle)."""
    records = {}
    for path in sorted((data_root / "dialogues").rglob("*.json")):
        for record in json.loads(path.read_text(encoding="utf-8")):
            records[record["id"]] = record
    return records


def train_ids(path: Path):
    """Sample ids of train.json, read line by line (one sample a line; the file is ~450 MB)."""
    ids = []
    with path.open(encoding="utf-8") as f:
        assert f.readline() == "[\n"
        for line in f:
            if line.strip() == "]":
                break
            ids.append(json.loads(line.rstrip().rstrip(","))["id"])
    return ids


def real_slice(mmrole_data: Path, root: Path, script: str = "Toy Story", owner: str = "Woody") -> Path:
    """A slice of the real raw MMRole-Data in the raw layout under root: the script's characters and profiles, the
    owner's character-image dialogues of all three types, the script's images (in the snapshot) and annotations."""
    source = mmrole_data / "profiles" / "in-distribution"
    roles = {script: json.loads((source / "roles.json").read_text(encoding="utf-8"))[script]}
    profiles = json.loads((source / "profiles.json").read_text(encoding="utf-8"))
    write_json(root / "profiles" / "in-distribution" / "roles.json", roles)
    write_json(root / "profiles" / "in-distribution" / "profiles.json", {name: profiles[name] for name in roles[script]})
    for kind in ("comment", "human-role", "inter-role"):
        name = f"{owner.replace(' ', '_')}_script.json"
        target = root / "dialogues" / "in-distribution" / kind / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((mmrole_data / "dialogues" / "in-distribution" / kind / name).read_bytes())
    folder = SCRIPT_FOLDERS[script]
    for image in sorted((mmrole_data / "images" / folder).iterdir()):
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "images" / folder / image.name).write_bytes(image.read_bytes())
    (root / "images" / "annotations.json").write_bytes((mmrole_data / "images" / "annotations.json").read_bytes())
    return root
