"""Character profiles for MMRole-Data (data_prep/gen_profiles.py).

Named characters: source text (profiles/<split>/raw_info_en|zh/<Name>.txt, by the character's
language) -> detailed profile (detailed_profiles/<Name>.json: introduction, personality,
experience, relationship, catchphrase) -> condensed markdown profile (profiles.json).
Hypothetical characters: `num_hypothetical` new invented people are generated first (meta
information: name, gender, age, origin, personality, experience -> meta_info_hypo/<Name>.json,
added to roles.json under "Hypothetical Characters"), then expanded the same way.

Inputs come from DATA_ROOT/profiles/<split>/, outputs go to OUT/profiles/<split>/ (OUT may be
DATA_ROOT). What exists in OUT is kept and counts as done (a detailed profile file, a profiles.json
entry) unless `overwrite`. Every generated file carries a `generator` stamp (prompt version,
model); profiles.json, a plain {name: text} map, has its stamps in profiles.generator.json.
Finished calls are journaled in OUT/.generation/ (a rerun continues; `overwrite` regenerates
what the journal does not hold yet: delete the journal to start over).

A reply is kept only in the requested format and the character's language (the filter's CJK-share
bounds); a condensed profile also needs a heading for each of the five sections. Failures (a batch
of people, a character) and unusable inputs (a missing or malformed source text, meta information
or detailed profile) are reported with file and name; the rest goes on, a rerun retries.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ...backends.client import (ChatCall, ChatClient, Completion, MalformedResponse, RequestFailed, system_message,
                                user_message)
from ...common.progress import progress_bar
from ...common.prompts import HYPOTHETICAL_SCRIPT, language_of
from ...common.store import PathLike, atomic_write_json
from ..filter import FilterConfig, language_problem
from ..raw import DialogueError, name_stem, read_json, read_required_json, read_roles
from .prompts import (DETAILED_FIELDS, GENERATOR_SYSTEM, META_FIELDS, condensed_profile_prompt, detailed_profile_prompt,
                      hypothetical_people_prompt, meta_source_text, parse_json_reply)
from .runner import (PlannedCall, RunSummary, generator_stamp, open_journal, record_rejection, rejected_before,
                     result_of, run_calls, skipped_lines)

SOURCE_FOLDERS = {"English": "raw_info_en", "Chinese": "raw_info_zh"}


@dataclass
class ProfileOptions:
    data_root: PathLike
    split: str = "in-distribution"
    output_dir: Optional[PathLike] = None  # default: data_root
    characters: Optional[Sequence[str]] = None  # default: everyone in roles.json (and the new people)
    num_hypothetical: int = 0
    hypothetical_batch: int = 10  # people per request
    overwrite: bool = False
    max_items: Optional[int] = None
    progress: bool = True
    retry_rejected: bool = False  # ask again for items whose replies were all rejected in an earlier run


@dataclass
class ProfileReport:
    new_people: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)  # "file: character: why"
    stages: Dict[str, RunSummary] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(len(s.failed) for s in self.stages.values())

    @property
    def not_done(self) -> int:
        """Items not made: failed, rejected (now or before) or skipped for their input."""
        return sum(s.not_done for s in self.stages.values()) + len(self.skipped)

    unusable = False  # a file the whole run depends on stops it instead (RawDataError)

    def lines(self) -> List[str]:
        out = [f"new hypothetical people: {len(self.new_people)}"] if self.new_people else []
        for stage, summary in self.stages.items():
            out += summary.lines(stage)
        return out + skipped_lines(self.skipped)


class _Paths:
    def __init__(self, options: ProfileOptions):
        self.source = Path(options.data_root) / "profiles" / options.split
        self.target = Path(options.output_dir or options.data_root) / "profiles" / options.split

    def source_text(self, name: str, language: str) -> Path:
        return self.source / SOURCE_FOLDERS[language] / f"{name_stem(name)}.txt"

    def meta(self, name: str, base: Optional[Path] = None) -> Path:
        return (base or self.target) / "meta_info_hypo" / f"{name_stem(name)}.json"

    def detailed(self, name: str) -> Path:
        return self.target / "detailed_profiles" / f"{name_stem(name)}.json"


def _planned_call(key: str, prompt: str, validate, where: str) -> PlannedCall:
    return PlannedCall(key, where, ChatCall(messages=[system_message(GENERATOR_SYSTEM), user_message(prompt)],
                                       key=key, validate=validate))


def _finished(calls: Sequence[PlannedCall], journal) -> Iterator[Tuple[str, dict]]:
    """(character name, journal record) of each call of a stage that has a result."""
    for planned in calls:
        record = result_of(journal, planned.key)
        if record is not None:
            yield planned.key.split("/", 1)[1], record


# --- validators (raise MalformedResponse: the client retries) -------------------------------------

def _text_field(value) -> str:
    if isinstance(value, list):  # a list of lines is a fair way to answer a "list" field
        value = "\n".join(str(v) for v in value)
    return value.strip() if isinstance(value, str) else ""


def profile_fields(obj) -> Tuple[Dict[str, str], List[str]]:
    """(the five detailed-profile fields as text, the names of those missing or empty)."""
    profile = {f: _text_field(obj.get(f)) for f in DETAILED_FIELDS} if isinstance(obj, dict) else {}
    return profile, [f for f in DETAILED_FIELDS if not profile.get(f)]


_LANGUAGE_BOUNDS = FilterConfig()  # the filter's CJK-share bounds, so profiles and dialogues agree


def _check_language(text: str, language: str, what: str) -> None:
    problem = language_problem(text, language, _LANGUAGE_BOUNDS)
    if problem:
        raise MalformedResponse(f"{what} in the wrong language: {problem}")


def detailed_validator(language: str) -> Callable[[Completion], Dict[str, str]]:
    def validate(completion: Completion) -> Dict[str, str]:
        obj = parse_json_reply(completion.text)
        if not isinstance(obj, dict):
            raise MalformedResponse("expected a JSON object with the five profile fields")
        profile, missing = profile_fields(obj)
        if missing:
            raise MalformedResponse(f"profile fields missing or empty: {missing}")
        for name, text in profile.items():
            _check_language(text, language, f"field {name!r}")
        return profile
    return validate


# A section starts with a markdown heading or a line that is only a bold label; every released
# condensed profile has 5 or 6 such lines (some add a title), however its headings are spelled.
_SECTION_LINE = re.compile(r"^\s*(?:#{1,6}\s+\S|\*\*[^*]+\*\*[:：]?\s*$)")
# Each of the five sections needs a heading. The released profiles spell them many ways ("Brief
# Introduction", "Introduction to Thanos", "Notable Quotes", "成龙简介", "口头禅或名言"), so a heading
# counts for a section when it holds one of the section's words (all 72 released profiles pass).
SECTION_WORDS = {
    "introduction": ("introduc", "overview", "summary", "简介", "介绍"),
    "personality": ("personalit", "性格"),
    "life story": ("life", "story", "background", "experience", "经历"),
    "relationships": ("relationship", "关系"),
    "catchphrases": ("catchphrase", "quote", "lines", "saying", "名言", "口头禅"),
}


def condensed_validator(language: str) -> Callable[[Completion], str]:
    def validate(completion: Completion) -> str:
        text = completion.text.strip()
        if completion.finish_reason == "length":
            raise MalformedResponse("cut by the token limit")
        headings = [line.lower() for line in text.splitlines() if _SECTION_LINE.match(line)]
        if not len(SECTION_WORDS) <= len(headings) <= len(SECTION_WORDS) + 2:
            raise MalformedResponse(f"expected the 5 profile sections, found {len(headings)} section headings")
        missing = [section for section, words in SECTION_WORDS.items()
                   if not any(word in heading for heading in headings for word in words)]
        if missing:
            raise MalformedResponse(f"no section heading for: {missing}")
        _check_language(text, language, "profile")
        return text
    return validate


def _people_validator(count: int, taken: Sequence[str]):
    def validate(completion: Completion) -> List[Dict[str, str]]:
        people = parse_json_reply(completion.text)
        if not isinstance(people, list) or len(people) != count:
            raise MalformedResponse(f"expected a JSON list of {count} people")
        clean, names = [], set(taken)
        for person in people:
            if not isinstance(person, dict):
                raise MalformedResponse("a person is not a JSON object")
            entry = {f: "" if person.get(f) is None else str(person[f]).strip() for f in META_FIELDS}
            if not all(entry.values()):
                raise MalformedResponse(f"a person lacks fields: {[f for f, v in entry.items() if not v]}")
            if entry["name"] in names:
                raise MalformedResponse(f"name {entry['name']!r} is already taken")
            names.add(entry["name"])
            clean.append(entry)
        return clean
    return validate


# --- the pipeline --------------------------------------------------------------------------------

def generate_profiles(client: ChatClient, options: ProfileOptions, log: Callable[[str], None] = print) -> ProfileReport:
    paths = _Paths(options)
    report = ProfileReport()
    journal = open_journal(options.output_dir or options.data_root, f"gen_profiles.{options.split}")
    roles = _read_roles(paths)
    profile_maps = _read_profile_maps(paths)  # before any call: a damaged profiles.json stops the run here
    if options.num_hypothetical > 0:
        # a failed batch is reported and retried by a rerun; everyone else goes on
        report.new_people = _hypothetical_people(client, options, roles, journal, report, log)
    names = [n for names in roles.values() for n in names]
    if options.characters is not None:
        unknown = sorted(set(options.characters) - set(names))
        report.skipped += [f"{paths.target / 'roles.json'}: {n}: not in roles.json" for n in unknown]
        names = [n for n in names if n in set(options.characters) | set(report.new_people)]
    script_of = {n: s for s, members in roles.items() for n in members}
    _detailed_stage(client, options, paths, names, script_of, journal, report, log)
    _condensed_stage(client, options, paths, names, script_of, profile_maps, journal, report, log)
    return report


def _read_roles(paths: _Paths) -> Dict[str, List[str]]:
    for base in (paths.target, paths.source):
        if (base / "roles.json").is_file():
            return read_roles(base / "roles.json")
    raise FileNotFoundError(f"{paths.source / 'roles.json'} not found: list the characters there first")


def _read_profile_maps(paths: _Paths) -> Tuple[Dict[str, str], Dict[str, dict]]:
    """profiles.json and its stamps in the output folder ({} when absent)."""
    maps = []
    for path in (paths.target / "profiles.json", paths.target / "profiles.generator.json"):
        maps.append(read_required_json(path, dict, "{character name: ...}") if path.is_file() else {})
    return maps[0], maps[1]


def _hypothetical_people(client, options, roles, journal, report, log) -> List[str]:
    """New invented people, batch after batch, each batch avoiding every name known so far (also
    those of later batches finished in an earlier run, when a failed batch is retried)."""
    paths = _Paths(options)
    batches = math.ceil(options.num_hypothetical / options.hypothetical_batch)
    keys = [f"people/{batch}" for batch in range(batches)]
    summary = report.stages.setdefault("hypothetical people", RunSummary(planned=batches))
    with progress_bar(batches, "hypothetical people", options.progress, unit="call") as bar:
        for batch, key in enumerate(keys):
            bar.update(1)
            if result_of(journal, key) is not None:
                summary.already_done += 1
                continue
            count = min(options.hypothetical_batch, options.num_hypothetical - batch * options.hypothetical_batch)
            where = f"{paths.target / 'meta_info_hypo'}: batch {batch} ({count} people)"
            if rejected_before(journal, key) is not None and not options.retry_rejected:
                summary.rejected_before.append(f"{where}: {rejected_before(journal, key)}")
                continue
            known = [n for names in roles.values() for n in names]
            known += [p["name"] for other in keys if result_of(journal, other) for p in journal.get((other,))["value"]]
            taken = list(dict.fromkeys(known))
            try:
                done = client.chat([system_message(GENERATOR_SYSTEM), user_message(hypothetical_people_prompt(count, taken))],
                                   key=key, validate=_people_validator(count, taken))
            except RequestFailed as e:
                summary.failed.append(f"{where}: {e}")
                if e.rejected:
                    record_rejection(journal, key, e)
                log(f"failed: hypothetical people, batch {batch}: {e}"
                    + ("; --retry_rejected asks again" if e.rejected else "; rerun to retry it"))
                continue
            journal.append({"key": key, "value": done.value, **generator_stamp(done.model)})
            summary.finished += 1
    people = []
    for key in keys:
        record = result_of(journal, key)
        if record is None:
            continue
        for person in record["value"]:
            atomic_write_json(paths.meta(person["name"]), {**person, "generator": generator_stamp(record["model"])},
                              final_newline=False)
            people.append(person["name"])
    members = roles.setdefault(HYPOTHETICAL_SCRIPT, [])
    members += [name for name in people if name not in members]
    atomic_write_json(paths.target / "roles.json", roles, final_newline=False)
    return people


def _read_source(paths: _Paths, name: str, script: str) -> Tuple[Path, str, Optional[str]]:
    """(file, source text, why it cannot be used or None) for a character's detailed profile."""
    if script == HYPOTHETICAL_SCRIPT:
        for base in (paths.target, paths.source):
            path = paths.meta(name, base)
            if path.is_file():
                try:
                    meta = read_json(path)
                except DialogueError as e:
                    return path, "", e.detail
                if not isinstance(meta, dict):
                    return path, "", "expected a JSON object of meta information"
                return path, meta_source_text(meta), None
        return paths.meta(name), "", None
    path = paths.source_text(name, language_of(script))
    if not path.is_file():
        return path, "", None
    try:
        return path, path.read_text(encoding="utf-8"), None
    except (OSError, UnicodeDecodeError) as e:
        return path, "", f"cannot read: {e}"


def _detailed_stage(client, options, paths, names, script_of, journal, report, log) -> None:
    calls = []
    for name in names:
        key = f"detailed/{name}"
        if paths.detailed(name).is_file() and not options.overwrite and result_of(journal, key) is None:
            continue
        source, text, problem = _read_source(paths, name, script_of[name])
        if problem or not text.strip():
            report.skipped.append(f"{source}: {name}: {problem or 'no source text'}: no detailed profile")
            continue
        language = language_of(script_of[name])
        prompt = detailed_profile_prompt(name, script_of[name], language, text)
        calls.append(_planned_call(key, prompt, detailed_validator(language), f"{paths.detailed(name)}: {name}"))
    summary = run_calls(client, calls, journal, max_items=options.max_items, progress=options.progress,
                       desc="detailed profiles", log=log, retry_rejected=options.retry_rejected)
    report.stages["detailed profiles"] = summary
    for name, record in _finished(calls, journal):
        atomic_write_json(paths.detailed(name), {**record["value"], "generator": generator_stamp(record["model"])},
                          final_newline=False)


def _read_detailed(path: Path) -> Tuple[Optional[Dict[str, str]], str]:
    """(the detailed profile, "") or (None, why it cannot be used)."""
    try:
        obj = read_json(path)
    except DialogueError as e:
        return None, e.detail
    profile, missing = profile_fields(obj)
    if missing:
        return None, f"not a detailed profile (fields missing or empty: {missing})"
    return profile, ""


def _condensed_stage(client, options, paths, names, script_of, profile_maps, journal, report, log) -> None:
    profiles_path = paths.target / "profiles.json"
    profiles, stamps = profile_maps
    calls = []
    for name in names:
        key = f"condensed/{name}"
        if name in profiles and not options.overwrite and result_of(journal, key) is None:
            continue
        if not paths.detailed(name).is_file():
            report.skipped.append(f"{paths.detailed(name)}: {name}: no detailed profile, no condensed profile")
            continue
        detailed, problem = _read_detailed(paths.detailed(name))
        if detailed is None:
            report.skipped.append(f"{paths.detailed(name)}: {name}: {problem}: no condensed profile")
            continue
        language = language_of(script_of[name])
        prompt = condensed_profile_prompt(name, script_of[name], language, detailed)
        calls.append(_planned_call(key, prompt, condensed_validator(language), f"{profiles_path}: {name}"))
    budget = None if options.max_items is None else max(0, options.max_items - report.stages["detailed profiles"].finished)
    summary = run_calls(client, calls, journal, max_items=budget, progress=options.progress,
                       desc="condensed profiles", log=log, retry_rejected=options.retry_rejected)
    report.stages["condensed profiles"] = summary
    for name, record in _finished(calls, journal):
        profiles[name] = record["value"]
        stamps[name] = generator_stamp(record["model"])
    if calls:
        rank = {n: i for i, n in enumerate(names)}  # roles.json order; other entries keep theirs, after
        ordered = {n: profiles[n] for n in sorted(profiles, key=lambda n: rank.get(n, len(rank)))}
        atomic_write_json(profiles_path, ordered, final_newline=False)
        atomic_write_json(paths.target / "profiles.generator.json", stamps, final_newline=False)
