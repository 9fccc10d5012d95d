"""Raw MMRole-Data: load and validate the raw layout (characters, image annotations, dialogues).

The raw layout (protocol §1):

    ROOT/profiles/<split>/roles.json        {script: [character, ...]}
    ROOT/profiles/<split>/profiles.json     {character: condensed markdown profile}
    ROOT/images/annotations.json            [{image, role_info, place_info, scene_info}]
    ROOT/dialogues/in-distribution/<type>/<Character>_{COCO,script}.json
    ROOT/dialogues/out-of-distribution/<type>.json

with <split> in SPLITS and <type> in DIALOGUE_TYPES. Nothing here needs an image file to exist.

Problems are never fatal unless a whole split cannot be read (no roles.json): a file, record or
character that cannot be used becomes a `Skip` (file, item, reason, detail) which callers count,
print and move past. Reasons are short fixed keys (see REASONS) so that statistics can group them.

A dialogue's target turns (`Dialogue.sample_indices`, protocol §2) are the turns an instruction sample is made
for; the samples themselves, their ids and their train/test records are in mmrole.data.samples.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..common.prompts import HUMAN_SPEAKER, language_of
from ..common.store import PathLike


SPLITS = ("in-distribution", "out-of-distribution")
IN_DISTRIBUTION, OUT_OF_DISTRIBUTION = SPLITS
DIALOGUE_TYPES = ("comment", "human-role", "inter-role")
# How each type is spelled inside dialogue ids.
ID_MARKERS = {"comment": "comment", "human-role": "human-role-dialogue", "inter-role": "role-role-dialogue"}
SOURCES = ("COCO", "script")  # MS-COCO images / character-related images
_ID_PATTERN = re.compile(r"^(?P<owner>.+)_(?P<marker>comment|human-role-dialogue|role-role-dialogue)_"
                         r"(?P<source>COCO|script)(?:_(?P<k>\d+))?$")

# Why an item was skipped (the keys of the statistics).
REASONS = {
    "malformed_file": "the file is not valid JSON or not a list",
    "malformed_record": "the record is not an object with a text `id` and `image`",
    "bad_id": "the id does not follow <Character>_<type>_{COCO|script}[_k] for this file",
    "duplicate_id": "another record has the same id",
    "empty_record": "no conversation turns",
    "truncated": "the conversation stops before the character answers",
    "empty_turn": "a turn without text",
    "malformed_turn": "a turn without a speaker",
    "unknown_character": "the character is not in roles.json",
    "unknown_speaker": "a speaker who is neither the human nor a character of the script",
    "self_talk": "an inter-role dialogue in which the character talks with itself",
    "wrong_speaker_order": "turns do not alternate as the dialogue type requires",
    "missing_profile": "a character without a profile in profiles.json",
    "duplicate_character": "a character listed in two scripts",
    "missing_image": "the image file does not exist",
}


@dataclass(frozen=True)
class Skip:
    """An item that was reported and left out: which file, which item, why."""

    path: str
    item: str  # record id, character name, or "#<index>" for a record without an id
    reason: str  # a key of REASONS
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.item}: {self.detail or REASONS.get(self.reason, self.reason)}"


class RawDataError(ValueError):
    """The raw data cannot be used at all (e.g. roles.json missing or malformed)."""


class DialogueError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def name_stem(name: str) -> str:
    """How a character's name appears in file names and ids: spaces become underscores."""
    return name.replace(" ", "_")


def read_json(path: PathLike):
    """Parsed JSON, or DialogueError('malformed_file') naming the position of the damage."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DialogueError("malformed_file", f"cannot read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DialogueError("malformed_file", f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def read_required_json(path: PathLike, expected: type, shape: str):
    """A file a whole run depends on (roles.json, profiles.json, annotations.json): its content, or
    RawDataError naming the file and what is wrong with it."""
    try:
        content = read_json(path)
    except DialogueError as e:
        raise RawDataError(f"{path}: {e.detail}") from None
    if not isinstance(content, expected):
        raise RawDataError(f"{path}: expected {shape}")
    return content


# --- characters ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Character:
    name: str
    script: str
    split: str
    profile: Optional[str]  # None: missing from profiles.json

    @property
    def language(self) -> str:
        return language_of(self.script)

    @property
    def stem(self) -> str:
        return name_stem(self.name)


@dataclass
class RawSplit:
    """The characters of one split: roles.json + profiles.json."""

    split: str
    root: Path
    roles: Dict[str, List[str]]
    characters: Dict[str, Character]  # by name, in roles.json order
    by_stem: Dict[str, Character] = field(default_factory=dict)

    @property
    def profiles(self) -> Dict[str, str]:
        return {c.name: c.profile for c in self.characters.values() if c.profile is not None}

    @property
    def roles_path(self) -> Path:
        return self.root / "profiles" / self.split / "roles.json"

    @property
    def profiles_path(self) -> Path:
        return self.root / "profiles" / self.split / "profiles.json"

    def script_of(self, name: str) -> Optional[str]:
        character = self.characters.get(name)
        return character.script if character else None


def has_split(root: PathLike, split: str) -> bool:
    return (Path(root) / "profiles" / split / "roles.json").is_file()


def read_roles(path: PathLike) -> Dict[str, List[str]]:
    """A roles.json: {script: [character name, ...]}; RawDataError naming the file for another shape."""
    roles = read_required_json(path, dict, "{script: [character name, ...]}")
    if not all(
        isinstance(s, str) and isinstance(names, list) and all(isinstance(n, str) and n for n in names)
        for s, names in roles.items()
    ):
        raise RawDataError(f"{path}: expected {{script: [character name, ...]}}")
    return roles


def load_split(root: PathLike, split: str) -> Tuple[RawSplit, List[Skip]]:
    """roles.json and profiles.json of a split; a character without profile is kept (profile None)
    and reported, so its dialogues can be skipped by name."""
    root = Path(root)
    roles_path = root / "profiles" / split / "roles.json"
    profiles_path = root / "profiles" / split / "profiles.json"
    roles = read_roles(roles_path)
    skips: List[Skip] = []
    profiles: Mapping[str, str] = {}
    if profiles_path.is_file():
        profiles = read_required_json(profiles_path, dict, "{character name: profile text}")
    else:
        skips.append(Skip(str(profiles_path), "*", "missing_profile", "profiles.json not found: no character has a profile"))
    characters: Dict[str, Character] = {}
    for script, names in roles.items():
        for name in names:
            if name in characters:
                skips.append(Skip(str(roles_path), name, "duplicate_character",
                                  f"listed under {characters[name].script!r} and {script!r}; keeping the first"))
                continue
            profile = profiles.get(name)
            if not isinstance(profile, str) or not profile.strip():
                profile = None
                if profiles_path.is_file():
                    skips.append(Skip(str(profiles_path), name, "missing_profile",
                                      f"no profile for {name!r} (listed in roles.json under {script!r}): "
                                      "its dialogues are skipped"))
            characters[name] = Character(name, script, split, profile)
    raw = RawSplit(split, root, roles, characters)
    raw.by_stem = {c.stem: c for c in characters.values()}
    return raw, skips


# --- image annotations ---------------------------------------------------------------------------

class Annotations:
    """annotations.json by image path, matched case-insensitively: the data spells one folder two
    ways (`Toy_story` in annotations.json, `Toy_Story` in the dialogues)."""

    FIELDS = ("role_info", "place_info", "scene_info")

    def __init__(self, entries: Mapping[str, Mapping[str, str]] = None, path: Optional[Path] = None):
        self.path = path
        self._by_key: Dict[str, Dict[str, str]] = {}
        for image, entry in (entries or {}).items():
            self._by_key[image.lower()] = dict(entry)

    def get(self, image: str) -> Optional[Dict[str, str]]:
        return self._by_key.get(image.lower())

    def __contains__(self, image: str) -> bool:
        return image.lower() in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def images(self) -> List[str]:
        return [entry["image"] for entry in self._by_key.values()]


def load_annotations(root: PathLike) -> Tuple[Annotations, List[Skip]]:
    path = Path(root) / "images" / "annotations.json"
    if not path.is_file():
        return Annotations(path=path), [Skip(str(path), "*", "malformed_file",
                                             "annotations.json not found: no image gets auxiliary information")]
    data = read_required_json(path, list, "a list of {image, role_info, place_info, scene_info}")
    entries: Dict[str, Dict[str, str]] = {}
    skips = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"]:
            skips.append(Skip(str(path), f"#{index}", "malformed_record", "entry without an `image` path"))
            continue
        clean = {"image": entry["image"]}
        clean.update({k: entry.get(k) if isinstance(entry.get(k), str) else "" for k in Annotations.FIELDS})
        if entry["image"].lower() in {k.lower() for k in entries}:
            skips.append(Skip(str(path), entry["image"], "duplicate_id", "image annotated twice; keeping the first"))
            continue
        entries[entry["image"]] = clean
    return Annotations(entries, path), skips


# --- dialogues -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Turn:
    speaker: str  # `human` or a character name
    text: str


@dataclass(frozen=True)
class Dialogue:
    id: str
    type: str  # a DIALOGUE_TYPES entry
    split: str
    path: str  # the file it came from
    image: str  # relative to ROOT/images
    owner: Character  # whose dialogue file it is (the character of the id)
    source: str  # COCO or script
    turns: Tuple[Turn, ...]
    partner: Optional[Character] = None  # inter-role only

    def sample_indices(self) -> List[int]:
        """The target turns of this dialogue (protocol §2)."""
        if self.type == "comment":
            return [1]
        if self.type == "human-role":
            return list(range(1, len(self.turns), 2))
        return list(range(len(self.turns)))


def dialogue_files(root: PathLike, split: str, dialogue_type: str) -> List[Path]:
    """The dialogue files of a split and type (sorted; empty when absent)."""
    base = Path(root) / "dialogues" / split
    if split == OUT_OF_DISTRIBUTION:
        path = base / f"{dialogue_type}.json"
        return [path] if path.is_file() else []
    folder = base / dialogue_type
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def iter_dialogue_records(path: PathLike) -> Iterator[Tuple[int, object]]:
    """(index, record) of one dialogue file; DialogueError('malformed_file') when it is unreadable."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DialogueError("malformed_file", f"expected a JSON list of dialogues, found {type(data).__name__}")
    yield from enumerate(data)


def record_label(record: object, index: int) -> str:
    if isinstance(record, dict) and isinstance(record.get("id"), str) and record["id"]:
        return record["id"]
    return f"#{index}"


def parse_dialogue(record: object, *, path: PathLike, dialogue_type: str, raw: RawSplit) -> Dialogue:
    """Validate one raw record; DialogueError(reason, detail) says why it cannot be used."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not record["id"]:
        raise DialogueError("malformed_record", "not an object with a text `id`")
    dialogue_id = record["id"]
    image = record.get("image")
    if not isinstance(image, str) or not image.strip():
        raise DialogueError("malformed_record", "no `image` path")
    match = _ID_PATTERN.match(dialogue_id)
    if not match or match["marker"] != ID_MARKERS[dialogue_type]:
        raise DialogueError("bad_id", f"id does not read <Character>_{ID_MARKERS[dialogue_type]}_{{COCO|script}}[_k]")
    owner = raw.by_stem.get(match["owner"])
    if owner is None:
        raise DialogueError("unknown_character", f"{match['owner'].replace('_', ' ')!r} is not in {raw.roles_path}")
    turns = _parse_turns(record.get("conversations"))
    partner = _check_speakers(dialogue_type, owner, turns, raw)
    for character in (owner, partner):
        if character is not None and character.profile is None:
            raise DialogueError("missing_profile", f"no profile for {character.name!r} in {raw.profiles_path}")
    return Dialogue(dialogue_id, dialogue_type, raw.split, str(path), image, owner, match["source"], turns, partner)


def _parse_turns(conversations: object) -> Tuple[Turn, ...]:
    if conversations is None or conversations == []:
        raise DialogueError("empty_record", "no conversation turns")
    if not isinstance(conversations, list):
        raise DialogueError("malformed_record", "`conversations` is not a list")
    turns = []
    for index, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise DialogueError("malformed_turn", f"turn {index} is not an object")
        # The speaker is in `role`, or in `from` for a commentary question (pitfalls §9).
        speaker = turn.get("role", turn.get("from"))
        if not isinstance(speaker, str) or not speaker.strip():
            raise DialogueError("malformed_turn", f"turn {index} has no speaker (`role` or `from`)")
        text = turn.get("value")
        if not isinstance(text, str) or not text.strip():
            raise DialogueError("empty_turn", f"turn {index} ({speaker}) has no text")
        turns.append(Turn(speaker, text))
    return tuple(turns)


def _check_speakers(dialogue_type: str, owner: Character, turns: Sequence[Turn], raw: RawSplit) -> Optional[Character]:
    """Speakers known and in the right order for the type; returns the inter-role partner."""
    script_members = set(raw.roles.get(owner.script, ()))
    for index, turn in enumerate(turns):
        if turn.speaker != HUMAN_SPEAKER and turn.speaker not in script_members:
            raise DialogueError("unknown_speaker", f"turn {index}: speaker {turn.speaker!r} is not a character of "
                                f"{owner.script!r} in {raw.roles_path}")
    if dialogue_type == "inter-role":
        return _inter_role_partner(owner, turns, raw)
    if len(turns) < 2:
        raise DialogueError("truncated", f"{len(turns)} turn: the character never answers")
    if dialogue_type == "comment" and len(turns) != 2:
        raise DialogueError("wrong_speaker_order", f"a commentary has 2 turns (question, monologue), found {len(turns)}")
    for index, turn in enumerate(turns):
        expected = HUMAN_SPEAKER if index % 2 == 0 else owner.name
        if turn.speaker != expected:
            raise DialogueError("wrong_speaker_order", f"turn {index} is by {turn.speaker!r}, expected {expected!r} "
                                "(the human opens, then alternates with the character)")
    return None


def _inter_role_partner(owner: Character, turns: Sequence[Turn], raw: RawSplit) -> Character:
    speakers = {t.speaker for t in turns}
    if HUMAN_SPEAKER in speakers:
        raise DialogueError("unknown_speaker", "the human speaks in an inter-role dialogue")
    if owner.name not in speakers:
        raise DialogueError("wrong_speaker_order", f"{owner.name!r}, whose dialogue this is, never speaks")
    others = speakers - {owner.name}
    if not others:
        raise DialogueError("self_talk", f"{owner.name!r} is the only speaker (talking with itself)")
    if len(others) > 1:
        raise DialogueError("unknown_speaker", f"more than one partner: {sorted(others)}")
    partner = raw.characters[others.pop()]
    if len(turns) < 2:
        raise DialogueError("truncated", "one turn: nobody answers the opening")
    for index, turn in enumerate(turns):
        expected = partner.name if index % 2 == 0 else owner.name
        if turn.speaker != expected:
            raise DialogueError("wrong_speaker_order", f"turn {index} is by {turn.speaker!r}, expected {expected!r} "
                                "(the partner opens, then the two alternate)")
    return partner


@dataclass
class SplitDialogues:
    """Every usable dialogue of a split, in file order, and what was skipped."""

    dialogues: List[Dialogue] = field(default_factory=list)
    skips: List[Skip] = field(default_factory=list)
    records: int = 0  # records read (usable or not)


def load_dialogues(root: PathLike, raw: RawSplit, dialogue_types: Sequence[str] = DIALOGUE_TYPES,
                   dialogues_root: Optional[PathLike] = None) -> SplitDialogues:
    """Parse every dialogue file of the split; unusable files and records become Skips."""
    result = SplitDialogues()
    seen: Dict[str, str] = {}
    for dialogue_type in dialogue_types:
        for path in dialogue_files(dialogues_root or root, raw.split, dialogue_type):
            try:
                records = list(iter_dialogue_records(path))
            except DialogueError as e:
                result.skips.append(Skip(str(path), "(whole file)", e.reason, e.detail))
                continue
            for index, record in records:
                result.records += 1
                label = record_label(record, index)
                if label in seen:
                    result.skips.append(Skip(str(path), label, "duplicate_id", f"id already used in {seen[label]}"))
                    continue
                try:
                    dialogue = parse_dialogue(record, path=path, dialogue_type=dialogue_type, raw=raw)
                except DialogueError as e:
                    result.skips.append(Skip(str(path), label, e.reason, e.detail))
                    continue
                seen[label] = str(path)
                result.dialogues.append(dialogue)
    return result
