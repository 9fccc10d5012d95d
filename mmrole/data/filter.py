"""Quality control of raw dialogues (data_prep/filter_dialogues.py): explicit rules, a report, and
a rejects file with the reasons of every rejected record.

Rules (a record is rejected when any fires; all firing rules are listed):

  structure (from mmrole.data.raw, the checks build_data applies; the first failure is reported)
    empty_record, truncated, empty_turn, malformed_turn, malformed_record, bad_id, unknown_character,
    unknown_speaker, self_talk, wrong_speaker_order, missing_profile, duplicate_id
  text (per turn)
    truncated_turn      the turn ends in the middle of a sentence: its last character is a letter,
                        a digit or a comma/colon/semicolon (a reply cut by a token limit)
    wrong_language      a Chinese-speaking character's dialogue with a turn whose CJK share of
                        letters is below `min_cjk_share_zh`, or an English one above `max_cjk_share_en`
    assistant_phrase    an AI-assistant phrase ("as an AI", "language model", "I'm sorry, but",
                        "作为一个AI", ...; ASSISTANT_PHRASES), case-insensitive
    speaker_prefix      a line of a turn starts with a speaker label ("Woody:", "[human]:",
                        "**Buzz Lightyear**:", "孙悟空：") of a character of the script, the human,
                        or "User"/"Assistant": the model wrote the dialogue format into a turn
    turn_length         a turn shorter or longer than the bounds of its language (characters)
  dialogue
    dialogue_length     fewer or more turns than the bounds of its type
    duplicate           the same turn texts as an earlier kept record (the first is kept)
    repeated_turn       the same text twice within one dialogue

Notes (reported, never rejecting): trailing_human_turn — a human-role dialogue ending with an
unanswered human turn (build_data makes no sample of it).

Defaults were chosen on the real data to flag damage, not style: see docs/data.md for the
counts they give on the released snapshot.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..common.prompts import HUMAN_SPEAKER
from ..common.store import PathLike, atomic_write_json, atomic_write_jsonl
from .raw import (DIALOGUE_TYPES, OUT_OF_DISTRIBUTION, SPLITS, Dialogue, DialogueError, RawSplit, dialogue_files,
                  has_split, iter_dialogue_records, load_split, parse_dialogue, record_label)


TEXT_RULES = {
    "truncated_turn": "a turn ends mid-sentence (last character a letter, digit, comma, colon or semicolon)",
    "wrong_language": "a turn not in the character's language",
    "assistant_phrase": "an AI-assistant phrase",
    "speaker_prefix": "a speaker label inside a turn",
    "turn_length": "a turn outside the length bounds",
    "dialogue_length": "a dialogue with too few or too many turns",
    "duplicate": "the same turns as an earlier record",
    "repeated_turn": "the same text twice in one dialogue",
}
WHOLE_FILE = "(whole file)"  # the id of a verdict on a file that could not be read at all
NOTES = {"trailing_human_turn": "a human-role dialogue ends with an unanswered human turn (kept)"}

# (keyword, pattern): the pattern is only tried on turns whose lower-cased text contains the
# keyword (a plain substring test), which keeps the filter fast on 100k turns.
ASSISTANT_PHRASES = (
    ("an ai", r"\b(?:as|i'?m|i am) an ai\b"),
    ("language model", r"\blanguage model\b"),
    ("sorry, but", r"\bi'?m sorry, but\b|\bi am sorry, but\b"),
    ("assistant", r"\bas an? (?:virtual |digital |helpful |ai )?assistant\b"),
    ("openai", r"\bopenai\b"),
    ("cannot", r"\bi cannot (?:help|assist) with\b"),
    ("作为", r"作为一个?(?:ai|人工智能|语言模型)"),
    ("语言模型", r"语言模型"),
    ("我是", r"我是一个?(?:ai|人工智能)"),
    ("我", r"(?:抱歉|对不起)，?我(?:无法|不能)"),
)
_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")
_CUT_END_PUNCTUATION = ",;:，；：_"


@dataclass
class FilterConfig:
    min_cjk_share_zh: float = 0.4  # real Chinese turns go down to ~0.54 when they quote English titles
    max_cjk_share_en: float = 0.2  # no English turn of the real data holds any CJK character
    turn_chars_en: Tuple[int, int] = (4, 4000)  # real: 4 .. 2654
    turn_chars_zh: Tuple[int, int] = (4, 1500)  # real: 5 .. 595
    dialogue_turns: Dict[str, Tuple[int, int]] = field(default_factory=lambda: {
        "comment": (2, 2), "human-role": (4, 40), "inter-role": (4, 40)})  # real multi-turn: 4 .. 26
    assistant_phrases: Sequence[Tuple[str, str]] = ASSISTANT_PHRASES
    extra_speaker_labels: Sequence[str] = ("User", "Assistant", "AI")

    def with_multi_turn_bounds(self, low: int, high: int) -> "FilterConfig":
        """This config with human-role and inter-role dialogues bounded to low..high turns."""
        bounds = {"human-role": (low, high), "inter-role": (low, high)}
        return replace(self, dialogue_turns={**self.dialogue_turns, **bounds})


@dataclass
class Verdict:
    path: str
    id: str
    reasons: List[Tuple[str, str]]  # (rule, detail); empty: kept
    notes: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return not self.reasons


def language_problem(text: str, language: str, config: FilterConfig) -> Optional[str]:
    """Why `text` is not written in `language` (judged by the share of CJK among its letters), or None."""
    cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
    share = cjk / max(1, cjk + latin)
    if language == "Chinese" and share < config.min_cjk_share_zh:
        return f"Chinese expected, CJK share {share:.2f}"
    if language == "English" and share > config.max_cjk_share_en:
        return f"English expected, CJK share {share:.2f}"
    return None


class TextRules:
    """The per-turn and per-dialogue text rules, compiled once for a script's characters."""

    def __init__(self, config: FilterConfig, raw: RawSplit):
        self.config = config
        self.raw = raw
        self._phrases = [(keyword, re.compile(pattern)) for keyword, pattern in config.assistant_phrases]
        self._labels: Dict[str, re.Pattern] = {}

    def _label_pattern(self, script: str) -> re.Pattern:
        if script not in self._labels:
            names = list(self.raw.roles.get(script, ())) + [HUMAN_SPEAKER, "Human", *self.config.extra_speaker_labels]
            alternatives = "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True))
            # at a line start: optional ** or [ around the name, then a colon (ASCII or full width)
            self._labels[script] = re.compile(rf"^[ \t]*(?:\*\*|\[)?(?:{alternatives})(?:\*\*|\])?[ \t]*[:：]", re.MULTILINE)
        return self._labels[script]

    def turn_problems(self, text: str, language: str, script: str) -> List[Tuple[str, str]]:
        problems = []
        stripped = text.strip()
        last = stripped[-1:]
        if last and (last.isalnum() or last in _CUT_END_PUNCTUATION):  # letters of any script, digits
            problems.append(("truncated_turn", f"ends with {stripped[-20:]!r}"))
        wrong_language = language_problem(text, language, self.config)
        if wrong_language:
            problems.append(("wrong_language", wrong_language))
        lowered = text.lower()
        for keyword, pattern in self._phrases:
            phrase = pattern.search(lowered) if keyword in lowered else None
            if phrase:
                problems.append(("assistant_phrase", repr(phrase.group(0))))
                break
        label = self._label_pattern(script).search(text)
        if label:
            problems.append(("speaker_prefix", repr(label.group(0).strip())))
        low, high = self.config.turn_chars_zh if language == "Chinese" else self.config.turn_chars_en
        if not low <= len(stripped) <= high:
            problems.append(("turn_length", f"{len(stripped)} characters, bounds {low}..{high}"))
        return problems

    def dialogue_problems(self, dialogue: Dialogue) -> List[Tuple[str, str]]:
        problems = []
        for index, turn in enumerate(dialogue.turns):
            for rule, detail in self.turn_problems(turn.text, dialogue.owner.language, dialogue.owner.script):
                problems.append((rule, f"turn {index}: {detail}"))
        low, high = self.config.dialogue_turns[dialogue.type]
        if not low <= len(dialogue.turns) <= high:
            problems.append(("dialogue_length", f"{len(dialogue.turns)} turns, bounds {low}..{high}"))
        texts = [" ".join(t.text.split()) for t in dialogue.turns]
        repeated = sorted({i for i, text in enumerate(texts) if texts.index(text) != i})
        if repeated:
            problems.append(("repeated_turn", f"turns {repeated} repeat earlier turns"))
        return problems


def _notes(dialogue: Dialogue) -> List[Tuple[str, str]]:
    if dialogue.type == "human-role" and dialogue.turns[-1].speaker == HUMAN_SPEAKER:
        return [("trailing_human_turn", f"turn {len(dialogue.turns) - 1} is unanswered")]
    return []


def filter_split(root: PathLike, raw: RawSplit, config: FilterConfig, output_root: Optional[PathLike],
                 dialogue_types: Sequence[str] = DIALOGUE_TYPES) -> List[Verdict]:
    """Judge every record of the split; write the kept ones (same layout) under output_root."""
    rules = TextRules(config, raw)
    verdicts: List[Verdict] = []
    seen_ids: Dict[str, str] = {}
    seen_texts: Dict[Tuple[str, ...], str] = {}
    for dialogue_type in dialogue_types:
        for path in dialogue_files(root, raw.split, dialogue_type):
            kept = []
            try:
                records = list(iter_dialogue_records(path))
            except DialogueError as e:
                verdicts.append(Verdict(str(path), WHOLE_FILE, [(e.reason, e.detail)]))
                continue
            for index, record in records:
                verdict = _judge(record, index, path, dialogue_type, raw, rules, seen_ids, seen_texts)
                verdicts.append(verdict)
                if verdict.kept:
                    kept.append(record)
            if output_root is not None:
                target = Path(output_root) / Path(path).relative_to(root)
                atomic_write_json(target, kept, final_newline=False)
    return verdicts


def _judge(record, index: int, path: Path, dialogue_type: str, raw: RawSplit, rules: TextRules,
           seen_ids: Dict[str, str], seen_texts: Dict[Tuple[str, ...], str]) -> Verdict:
    label = record_label(record, index)
    if label in seen_ids:
        return Verdict(str(path), label, [("duplicate_id", f"id already used in {seen_ids[label]}")])
    try:
        dialogue = parse_dialogue(record, path=path, dialogue_type=dialogue_type, raw=raw)
    except DialogueError as e:
        return Verdict(str(path), label, [(e.reason, e.detail)])
    seen_ids[label] = str(path)
    reasons = rules.dialogue_problems(dialogue)
    texts = tuple(" ".join(t.text.split()) for t in dialogue.turns)
    if texts in seen_texts:
        reasons.append(("duplicate", f"same turns as {seen_texts[texts]}"))
    elif not reasons:
        seen_texts[texts] = label
    return Verdict(str(path), label, reasons, _notes(dialogue))


@dataclass
class FilterReport:
    records: int
    kept: int
    rejected: int
    by_rule: Dict[str, int]  # records on which each rule fired
    by_split_type: Dict[str, Dict[str, int]]
    notes: Dict[str, int]

    def lines(self) -> List[str]:
        out = [f"{self.records} records: {self.kept} kept, {self.rejected} rejected"]
        for key, counts in self.by_split_type.items():
            out.append(f"  {key}: {counts['kept']} kept, {counts['rejected']} rejected")
        out += [f"  rule {rule}: {n} records" for rule, n in self.by_rule.items()]
        out += [f"  note {note}: {n} records (kept)" for note, n in self.notes.items()]
        return out


def run_filter(data_root: PathLike, output_dir: Optional[PathLike], config: FilterConfig = None,
               dialogue_types: Sequence[str] = DIALOGUE_TYPES) -> Tuple[FilterReport, List[Verdict]]:
    """Filter every split present. Writes OUT/dialogues/... (kept records), OUT/rejects.jsonl and
    OUT/filter_report.json when output_dir is given; returns the report and all verdicts."""
    config = config or FilterConfig()
    verdicts: List[Verdict] = []
    split_of: Dict[int, str] = {}
    for split in SPLITS:
        if not has_split(data_root, split):
            continue
        raw, _ = load_split(data_root, split)
        out_root = Path(output_dir) if output_dir is not None else None
        for verdict in filter_split(data_root, raw, config, out_root, dialogue_types):
            split_of[id(verdict)] = split
            verdicts.append(verdict)
    report = _report(verdicts, split_of)
    if output_dir is not None:
        rejects = [{"path": v.path, "id": v.id, "reasons": [{"rule": r, "detail": d} for r, d in v.reasons]}
                   for v in verdicts if not v.kept]
        atomic_write_jsonl(Path(output_dir) / "rejects.jsonl", rejects)
        atomic_write_json(Path(output_dir) / "filter_report.json", report.__dict__)
    return report, verdicts


def _report(verdicts: Sequence[Verdict], split_of: Dict[int, str]) -> FilterReport:
    by_rule, notes = Counter(), Counter()
    by_split_type: Dict[str, Counter] = {}
    for verdict in verdicts:
        by_rule.update({rule for rule, _ in verdict.reasons})
        notes.update({note for note, _ in verdict.notes})
        key = f"{split_of[id(verdict)]}/{_type_of(verdict.path)}"
        by_split_type.setdefault(key, Counter())["kept" if verdict.kept else "rejected"] += 1
    kept = sum(v.kept for v in verdicts)
    return FilterReport(len(verdicts), kept, len(verdicts) - kept, dict(by_rule.most_common()),
                        {k: {"kept": c["kept"], "rejected": c["rejected"]} for k, c in by_split_type.items()},
                        dict(notes.most_common()))


def _type_of(path: str) -> str:
    path = Path(path)
    return path.stem if path.parent.name == OUT_OF_DISTRIBUTION else path.parent.name
