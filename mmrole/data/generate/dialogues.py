"""Dialogues for MMRole-Data with a vision chat model (data_prep/gen_dialogues.py).

For each character of the split (roles.json, profiles.json) and each dialogue type, one dialogue
per image: the character-related images of its script (images annotated in annotations.json whose
folder is the script's name with underscores, matched case-insensitively) and a seeded sample of
MS-COCO images from `coco_dir`. The image goes with the request as a base64 data URL; for a
character-related image the prompt also carries its annotation. Types (protocol §1):
  comment     one question from the fixed pool (prompts.COMMENT_QUESTIONS, in the character's
              language, seeded) and the character's monologue;
  human-role  the human opens, `rounds` turns each;
  inter-role  a partner from the same script (seeded) opens, `rounds` turns each.
A multi-turn reply must have 2 x rounds turns, give or take `rounds_tolerance` rounds (real
dialogues vary in length too: the released ones have 4 to 26 turns, most 8 to 16). A commentary
must have the shape of the released ones too (COMMENTARY_SHAPE: at least 200 characters and 3
sentences in English, 80 characters and 3 sentences in Chinese); a one-line reply is rejected.

Output: the raw layout under OUT/dialogues/<split>/ with the data's ids
(`<Name>_{comment|human-role-dialogue|role-role-dialogue}_{COCO|script}_<k>`; out-of-distribution:
one COCO and one character image per character and type, ids without `_<k>`). A reply is accepted
only if it passes the structure checks of build_data and the text rules of filter_dialogues (right
speakers and order, right language, no assistant phrases or speaker labels, ...); otherwise it is
retried and, after the last attempt, reported and never written. Records already in the output
files count as done; new ones are merged in, in id order. Every new record carries a `generator`
stamp (prompt version, model).

Unusable inputs are reported with file and item and skipped; the rest goes on: a character without
a profile, an annotated image without a file, an image that is not an image or is damaged (checked
before any request: file, dialogue id and path are named), an output file that exists but cannot be
read (its items are not generated and the file is left as it is). Without annotations.json no character-related
image is known (they are found through their annotations), so only COCO dialogues are made.
Requests are built as they are sent: the image is read and base64-encoded only for a dialogue not
done yet, and only while its request is in flight.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ...backends.client import ChatCall, ChatClient, Completion, MalformedResponse, system_message, user_message
from ...common.images import image_file_problem
from ...common.prompts import HUMAN_SPEAKER
from ...common.store import PathLike, atomic_write_json
from ..filter import FilterConfig, TextRules
from ..raw import (DIALOGUE_TYPES, ID_MARKERS, OUT_OF_DISTRIBUTION, Annotations, Character, DialogueError, RawSplit,
                   Skip, dialogue_files, iter_dialogue_records, load_annotations, load_split, name_stem, parse_dialogue)
from .prompts import (COMMENT_QUESTIONS, DIALOGUE_SYSTEM, comment_prompt, human_role_prompt, inter_role_prompt,
                      parse_json_reply)
from .runner import (PlannedCall, RunSummary, generator_stamp, open_journal, rejected_before, result_of, run_calls,
                     skipped_lines)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_K = re.compile(r"_(\d+)$")
# A commentary's least length (characters) and sentences, per language. The released commentaries have
# 241-2654 characters and 2-47 sentences in English (the one with 2 is a model's refusal to look at the
# image), 101-595 characters and 3-21 sentences in Chinese; the upper bounds are the filter's turn_length.
COMMENTARY_SHAPE = {"English": (200, 3), "Chinese": (80, 3)}
# A sentence ends with Chinese end punctuation, or with English punctuation before a space or the end.
_SENTENCE_END = re.compile(r"[。！？]+[”’」』）]*|(?:[.!?]+|…)[\"'”’)]*(?=\s|$)")


@dataclass
class DialogueOptions:
    data_root: PathLike
    split: str = "in-distribution"
    output_dir: Optional[PathLike] = None  # default: data_root
    types: Sequence[str] = DIALOGUE_TYPES
    characters: Optional[Sequence[str]] = None  # default: everyone with a profile
    coco_dir: Optional[PathLike] = None  # default: DATA_ROOT/images/COCO/train2017
    coco_per_character: Optional[int] = None  # default 50 (out-of-distribution: 1)
    script_per_character: Optional[int] = None  # default all (out-of-distribution: 1)
    rounds: int = 6
    rounds_tolerance: int = 2  # accepted: 2 x (rounds -/+ tolerance) turns
    seed: int = 42
    max_items: Optional[int] = None
    progress: bool = True
    retry_rejected: bool = False  # ask again for dialogues whose replies were all rejected in an earlier run


@dataclass
class Planned:
    """One dialogue to generate."""

    id: str
    type: str
    owner: Character
    source: str
    image: str  # as recorded: relative to images/
    file: Path  # the image file sent with the request
    annotation: Optional[Dict[str, str]]
    output: Path
    partner: Optional[str] = None
    question: Optional[str] = None


@dataclass
class DialogueReport:
    planned: List[Planned] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)  # "file: item: why"
    summary: RunSummary = field(default_factory=RunSummary)
    written: Dict[str, int] = field(default_factory=dict)  # output file -> records
    unreadable_outputs: List[str] = field(default_factory=list)  # output files that exist but cannot be read

    @property
    def failed(self) -> int:
        return len(self.summary.failed)

    @property
    def not_done(self) -> int:
        """Dialogues not made: failed, rejected (now or before) or skipped for their input."""
        return self.summary.not_done + len(self.skipped)

    @property
    def unusable(self) -> bool:
        return bool(self.unreadable_outputs)

    def lines(self) -> List[str]:
        out = self.summary.lines("dialogues") + skipped_lines(self.skipped)
        out += [f"  wrote {n} records to {path}" for path, n in self.written.items()]
        return out


# --- planning ------------------------------------------------------------------------------------

def _image_folders(images_root: Path) -> Dict[str, str]:
    """Folder names under images/ by lower case (the data spells one folder two ways)."""
    return {p.name.lower(): p.name for p in images_root.iterdir() if p.is_dir()} if images_root.is_dir() else {}


def script_images(script: str, annotations: Annotations, images_root: Path, skipped: List[str]) -> List[Tuple[str, dict]]:
    """(image path as on disk, annotation) of the script's annotated images that exist; an annotated
    image without a file is reported."""
    folders = _image_folders(images_root)
    folder = name_stem(script).lower()
    found = []
    for entry in sorted(annotations.images(), key=str.lower):
        top, _, rest = entry.partition("/")
        if top.lower() != folder:
            continue
        on_disk = f"{folders.get(top.lower(), top)}/{rest}"
        if not (images_root / on_disk).is_file():
            skipped.append(f"{annotations.path}: {entry}: listed but absent ({images_root / on_disk})")
            continue
        found.append((on_disk, annotations.get(entry)))
    return found


def coco_images(coco_dir: Path) -> List[str]:
    return sorted(p.name for p in coco_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if coco_dir.is_dir() else []


def _dialogue_id(owner: Character, dialogue_type: str, source: str, k: Optional[int]) -> str:
    base = f"{owner.stem}_{ID_MARKERS[dialogue_type]}_{source}"
    return base if k is None else f"{base}_{k}"


def _output_file(out_root: Path, split: str, dialogue_type: str, owner: Character, source: str) -> Path:
    if split == OUT_OF_DISTRIBUTION:
        return out_root / "dialogues" / split / f"{dialogue_type}.json"
    return out_root / "dialogues" / split / dialogue_type / f"{owner.stem}_{source}.json"


def plan_dialogues(options: DialogueOptions, raw: RawSplit, annotations: Annotations,
                   existing_ids: set, report: DialogueReport, unreadable: Dict[Path, str]) -> List[Planned]:
    """The dialogues still to make. unreadable: output files that exist but cannot be read (their
    items are skipped, so the file is never overwritten)."""
    root = Path(options.data_root)
    out_root = Path(options.output_dir or options.data_root)
    images_root = root / "images"
    ood = options.split == OUT_OF_DISTRIBUTION
    coco_count = options.coco_per_character if options.coco_per_character is not None else (1 if ood else 50)
    script_count = options.script_per_character if options.script_per_character is not None else (1 if ood else None)
    if ood and (coco_count > 1 or (script_count or 0) > 1):
        raise ValueError("out-of-distribution data has one COCO and one character image per character and type")
    coco_dir = Path(options.coco_dir) if options.coco_dir else images_root / "COCO" / "train2017"
    coco_pool = coco_images(coco_dir)
    if coco_count and not coco_pool:
        report.skipped.append(f"{coco_dir}: *: no COCO images there: no COCO dialogues")
    chosen = options.characters
    characters = [c for c in raw.characters.values() if chosen is None or c.name in chosen]
    for name in sorted(set(chosen or ()) - set(raw.characters)):
        report.skipped.append(f"{raw.roles_path}: {name}: not in roles.json")
    by_script: Dict[str, List[Tuple[str, dict]]] = {}
    planned = []
    for dialogue_type in options.types:
        for owner in characters:
            if owner.profile is None:
                report.skipped.append(f"{raw.profiles_path}: {owner.name}: no profile: no {dialogue_type} dialogues")
                continue
            if owner.script not in by_script:
                by_script[owner.script] = script_images(owner.script, annotations, images_root, report.skipped)
            rng = random.Random(f"{options.seed}:{options.split}:{dialogue_type}:{owner.name}")
            images = [("COCO", f"COCO/train2017/{n}", coco_dir / n, None)
                      for n in rng.sample(coco_pool, min(coco_count, len(coco_pool)))]
            scripted = by_script[owner.script]
            if script_count is not None:
                scripted = rng.sample(scripted, min(script_count, len(scripted)))
            images += [("script", path, images_root / path, annotation) for path, annotation in scripted]
            counters = {"COCO": 0, "script": 0}
            for source, image, file, annotation in images:
                k = None if ood else counters[source]
                counters[source] += 1
                item = Planned(_dialogue_id(owner, dialogue_type, source, k), dialogue_type, owner, source, image,
                               file, annotation, _output_file(out_root, options.split, dialogue_type, owner, source))
                if item.id in existing_ids:
                    continue
                if item.output in unreadable:
                    report.skipped.append(f"{item.output}: {item.id}: not generated, the output file cannot be "
                                          f"read ({unreadable[item.output]}): repair or move it, then rerun")
                    continue
                if not _choose_speakers(item, raw, options.seed, report):
                    continue
                planned.append(item)
    return planned


def _choose_speakers(item: Planned, raw: RawSplit, seed: int, report: DialogueReport) -> bool:
    rng = random.Random(f"{seed}:{item.id}")
    if item.type == "comment":
        item.question = rng.choice(COMMENT_QUESTIONS[item.owner.language])
    elif item.type == "inter-role":
        partners = [n for n in raw.roles[item.owner.script] if n != item.owner.name and raw.characters[n].profile]
        if not partners:
            report.skipped.append(f"{raw.roles_path}: {item.id}: no other character with a profile in "
                                  f"{item.owner.script!r} to talk with")
            return False
        item.partner = rng.choice(partners)
    return True


# --- requests and replies ------------------------------------------------------------------------

def _prompt(item: Planned, raw: RawSplit, rounds: int) -> str:
    owner = item.owner
    if item.type == "comment":
        return comment_prompt(owner.name, owner.script, owner.language, owner.profile, item.question, item.annotation)
    if item.type == "human-role":
        return human_role_prompt(owner.name, owner.script, owner.language, owner.profile, rounds, item.annotation)
    return inter_role_prompt(owner.name, item.partner, owner.script, owner.language, raw.profiles, rounds,
                             item.annotation)


def _record(item: Planned, conversations: List[dict]) -> dict:
    record = {"id": item.id, "image": item.image}
    if item.annotation:
        record.update({f: item.annotation.get(f, "") for f in Annotations.FIELDS})
    record["conversations"] = conversations
    return record


def _conversations(item: Planned, completion: Completion) -> List[dict]:
    if completion.finish_reason == "length":
        raise MalformedResponse("cut by the token limit")
    if item.type == "comment":
        text = completion.text.strip()
        problem = commentary_shape_problem(text, item.owner.language)
        if problem:
            raise MalformedResponse(problem)
        return [{"from": HUMAN_SPEAKER, "value": item.question}, {"role": item.owner.name, "value": text}]
    turns = parse_json_reply(completion.text)
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise MalformedResponse("expected a JSON list of {role, value} turns")
    conversations = []
    for turn in turns:
        speaker = " ".join(str(turn.get("role", "")).split())
        if speaker.lower() == HUMAN_SPEAKER:
            speaker = HUMAN_SPEAKER
        conversations.append({"role": speaker, "value": str(turn.get("value", "")).strip()})
    return conversations


def commentary_shape_problem(text: str, language: str) -> Optional[str]:
    """Why a commentary reply is not shaped like the released ones (COMMENTARY_SHAPE), or None."""
    least_chars, least_sentences = COMMENTARY_SHAPE[language]
    ends = list(_SENTENCE_END.finditer(text))
    sentences = len(ends) + (1 if text and (not ends or ends[-1].end() < len(text.rstrip())) else 0)
    if len(text) < least_chars:
        return f"commentary too short: {len(text)} characters, at least {least_chars} expected"
    if sentences < least_sentences:
        return f"commentary of {sentences} sentence(s), at least {least_sentences} expected"
    return None


def turn_bounds(rounds: int, tolerance: int) -> Tuple[int, int]:
    """Turns a multi-turn reply may have when `rounds` turns each were asked for."""
    if rounds < 1 or tolerance < 0:
        raise ValueError(f"rounds must be at least 1 and its tolerance at least 0 (got {rounds}, {tolerance})")
    return 2 * max(1, rounds - tolerance), 2 * (rounds + tolerance)


def _validator(item: Planned, raw: RawSplit, rules: TextRules):
    """The record of a reply, if it passes build_data's structure checks and the filter's text rules."""
    def validate(completion: Completion) -> dict:
        record = _record(item, _conversations(item, completion))
        try:
            dialogue = parse_dialogue(record, path=item.output, dialogue_type=item.type, raw=raw)
        except DialogueError as e:
            raise MalformedResponse(f"{e.reason}: {e.detail}") from None
        if item.partner is not None and dialogue.partner.name != item.partner:
            raise MalformedResponse(f"the partner is {dialogue.partner.name!r}, not {item.partner!r}")
        problems = rules.dialogue_problems(dialogue)
        if problems:
            raise MalformedResponse("; ".join(f"{rule}: {detail}" for rule, detail in problems[:3]))
        return record
    return validate


def _planned_call(item: Planned, raw: RawSplit, rules: TextRules, rounds: int) -> PlannedCall:
    def messages():  # run by the client when the request is sent: the image is encoded then
        return [system_message(DIALOGUE_SYSTEM), user_message(_prompt(item, raw, rounds), images=[item.file])]

    return PlannedCall(item.id, f"{item.output}: {item.id}",
                  ChatCall(messages=messages, key=item.id, validate=_validator(item, raw, rules)))


# --- the pipeline --------------------------------------------------------------------------------

def _existing(paths: Sequence[Path]) -> Tuple[Dict[Path, List[dict]], Dict[Path, str]]:
    """Records already in the output files (they count as done and are kept), and the files that
    exist but cannot be read, with why."""
    existing, unreadable = {}, {}
    for path in paths:
        try:
            records = list(record for _, record in iter_dialogue_records(path))
        except DialogueError as e:
            unreadable[path] = e.detail
            continue
        existing[path] = records
    return existing, unreadable


def _annotation_notes(annotations: Annotations, skips: Sequence[Skip]) -> List[str]:
    if annotations.path is not None and not annotations.path.is_file():
        return [f"{annotations.path}: *: not found: character-related images are found through their "
                "annotations, so no character-image dialogues are made; COCO dialogues go on"]
    return [str(skip) for skip in skips]


def generate_dialogues(client: ChatClient, options: DialogueOptions, log: Callable[[str], None] = print) -> DialogueReport:
    report = DialogueReport()
    low, high = turn_bounds(options.rounds, options.rounds_tolerance)
    raw, _ = load_split(options.data_root, options.split)  # characters without a profile are named when planned
    annotations, annotation_skips = load_annotations(options.data_root)
    report.skipped += _annotation_notes(annotations, annotation_skips)
    out_root = Path(options.output_dir or options.data_root)
    existing, unreadable = _existing([p for t in options.types for p in dialogue_files(out_root, options.split, t)])
    report.unreadable_outputs = [f"{path}: {why}" for path, why in unreadable.items()]
    existing_ids = {r.get("id") for records in existing.values() for r in records if isinstance(r, dict)}
    report.planned = plan_dialogues(options, raw, annotations, existing_ids, report, unreadable)
    default = FilterConfig()
    default_low, default_high = default.dialogue_turns["human-role"]
    if {"human-role", "inter-role"} & set(options.types) and not (default_low <= low and high <= default_high):
        log(f"note: dialogues of {low}-{high} turns: filter them with --dialogue_turns {low} {high} "
            f"(filter_dialogues' default is {default_low} {default_high})")
    rules = TextRules(default.with_multi_turn_bounds(low, high), raw)
    journal = open_journal(out_root, f"gen_dialogues.{options.split}")
    items = _with_usable_images(report.planned, journal, report, options.retry_rejected)
    calls = [_planned_call(item, raw, rules, options.rounds) for item in items]  # cheap: calls are built when sent
    report.summary = run_calls(client, calls, journal, max_items=options.max_items, progress=options.progress,
                              desc="dialogues", log=log, retry_rejected=options.retry_rejected)
    _write(items, journal, existing, raw, report)
    return report


def _with_usable_images(items: Sequence[Planned], journal, report: DialogueReport, retry_rejected: bool) -> List[Planned]:
    """The planned dialogues whose image can be sent: each image still to send is decoded first (before any
    request), and one that is not an image or is damaged is reported with file, dialogue id and path."""
    kept, verdicts = [], {}
    for item in items:
        will_send = result_of(journal, item.id) is None and (retry_rejected or rejected_before(journal, item.id) is None)
        if will_send:
            if item.file not in verdicts:
                verdicts[item.file] = image_file_problem(item.file)
            if verdicts[item.file]:
                report.skipped.append(f"{item.output}: {item.id}: {verdicts[item.file]}: {item.file}")
                continue
        kept.append(item)
    return kept


def _write(items: Sequence[Planned], journal, existing: Dict[Path, List[dict]], raw: RawSplit,
           report: DialogueReport) -> None:
    new: Dict[Path, List[dict]] = {}
    for item in items:
        record = result_of(journal, item.id)
        if record is not None:
            new.setdefault(item.output, []).append({**record["value"], "generator": generator_stamp(record["model"])})
    rank = {c.stem: i for i, c in enumerate(raw.characters.values())}
    for path, records in new.items():
        merged = existing.get(path, []) + records
        merged.sort(key=lambda r: _order(r.get("id", ""), rank))
        atomic_write_json(path, merged, final_newline=False)
        report.written[str(path)] = len(merged)


def _order(dialogue_id: str, rank: Dict[str, int]) -> Tuple:
    """In-distribution files: by k. Out-of-distribution files: roles.json order, COCO before script."""
    match = _K.search(dialogue_id)
    owner = re.split(r"_(?:comment|human-role-dialogue|role-role-dialogue)_", dialogue_id)[0]
    return (rank.get(owner, len(rank)), "_script" in dialogue_id, int(match.group(1)) if match else -1)
