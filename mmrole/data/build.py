"""Raw MMRole-Data -> the training set and the In-Test / Out-Test sets (data_prep/build_data.py).

Outputs under OUT:
    train/train.json                                   Qwen-VL fine-tuning samples (one JSON object a line)
    test/<split>/{comment,human-role,inter-role}_test.json   the published test schema
    skipped.jsonl                                      every skipped item: file, item, reason, detail
    build_stats.json                                   the statistics printed at the end

The split. With `test_ids` (one sample id a line, e.g. the ids of the published test files) the test
sets are exactly those samples, in that order; ids whose dialogue is absent or unusable are
reported. Without it the split is sampled as the paper describes, seeded:
  In-Test: `in_test_per_type` samples per dialogue type from in-distribution characters, spread
    evenly over the characters (72 characters -> one each), each from a random usable dialogue
    (COCO or character image) and a random target turn of it;
  Out-Test: for every out-of-distribution character and type, one sample from a COCO dialogue and
    one from a character-image dialogue, when such dialogues exist.
Every dialogue that contributes a test sample is left out of training entirely, and
out-of-distribution dialogues never enter training.

Images: no image file is needed. Missing image files are counted (by top folder), and so are the
test and training samples that reference them; with `check_images` those samples are skipped
instead, each one named.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..common.store import PathLike, atomic_text_writer, atomic_write_json, atomic_write_jsonl
from .raw import (DIALOGUE_TYPES, IN_DISTRIBUTION, OUT_OF_DISTRIBUTION, SOURCES, SPLITS, Annotations, Dialogue,
                  RawDataError, RawSplit, Skip, has_split, load_annotations, load_dialogues, load_split)
from .samples import InstructionSample, dialogue_sample, dialogue_samples, split_sample_id


@dataclass
class BuildOptions:
    data_root: PathLike
    output_dir: PathLike
    image_prefix: str = "images/"  # what the <img> path of training samples starts with
    seed: int = 42
    test_ids: Optional[Sequence[str]] = None
    in_test_per_type: int = 72
    check_images: bool = False
    image_dir: Optional[PathLike] = None  # where image files are looked up (default ROOT/images)
    dialogues_root: Optional[PathLike] = None  # ROOT holding dialogues/ (default data_root), e.g. filtered output


@dataclass
class BuildResult:
    train: int = 0
    test: Dict[Tuple[str, str], int] = field(default_factory=dict)  # (split, type) -> samples
    skips: List[Skip] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    missing_test_ids: List[Tuple[str, str]] = field(default_factory=list)  # (id, why)
    missing_image_samples: Counter = field(default_factory=Counter)  # "test"/"train" -> samples


# --- loading -------------------------------------------------------------------------------------

@dataclass
class LoadedData:
    """Everything build() reads: the characters and usable dialogues of each split present."""

    splits: Dict[str, RawSplit]
    dialogues: Dict[str, List[Dialogue]]  # split -> usable dialogues in file order
    annotations: Annotations
    records: Dict[str, int]
    skips: List[Skip]

    def profiles(self, split: str) -> Dict[str, str]:
        return self.splits[split].profiles


def load_data(data_root: PathLike, dialogues_root: Optional[PathLike] = None) -> LoadedData:
    """Characters, annotations and usable dialogues of every split present under data_root."""
    annotations, skips = load_annotations(data_root)
    splits, dialogues, records = {}, {}, {}
    for split in SPLITS:
        if not has_split(data_root, split):
            continue
        raw, split_skips = load_split(data_root, split)
        loaded = load_dialogues(data_root, raw, dialogues_root=dialogues_root)
        splits[split], dialogues[split], records[split] = raw, loaded.dialogues, loaded.records
        skips += split_skips + loaded.skips
    if IN_DISTRIBUTION not in splits:
        raise RawDataError(f"{Path(data_root) / 'profiles' / IN_DISTRIBUTION / 'roles.json'} not found: "
                           "not a raw MMRole-Data folder")
    return LoadedData(splits, dialogues, annotations, records, skips)


# --- choosing the test samples -------------------------------------------------------------------

def _samples_from_ids(loaded: LoadedData, test_ids: Sequence[str], result: BuildResult) -> List[InstructionSample]:
    by_id = {d.id: d for split in loaded.dialogues.values() for d in split}
    skipped_by_id = {s.item: s for s in loaded.skips}
    chosen, seen = [], set()
    for sample_id in test_ids:
        if sample_id in seen:
            result.missing_test_ids.append((sample_id, "listed twice; kept once"))
            continue
        seen.add(sample_id)
        try:
            dialogue_id, index = split_sample_id(sample_id)
        except ValueError as e:
            result.missing_test_ids.append((sample_id, str(e)))
            continue
        dialogue = by_id.get(dialogue_id)
        if dialogue is None:
            skip = skipped_by_id.get(dialogue_id)
            why = f"its dialogue was skipped: {skip}" if skip else "its dialogue is not in the raw data"
            result.missing_test_ids.append((sample_id, why))
            continue
        if index not in dialogue.sample_indices():
            result.missing_test_ids.append((sample_id, f"turn {index} is not a target turn of {dialogue_id} "
                                                       f"({dialogue.type}, {len(dialogue.turns)} turns)"))
            continue
        chosen.append(dialogue_sample(dialogue, index, loaded.annotations, loaded.profiles(dialogue.split)))
    return chosen


def _even_quotas(names: Sequence[str], total: int, rng: random.Random) -> Dict[str, int]:
    """`total` spread over names as evenly as possible; who gets the remainder is random."""
    if not names:
        return {}
    base, extra = divmod(total, len(names))
    lucky = set(rng.sample(list(names), extra))
    return {name: base + (name in lucky) for name in names}


def _random_sample(dialogues: Sequence[Dialogue], count: int, rng: random.Random, loaded: LoadedData) -> List[InstructionSample]:
    picked = rng.sample(list(dialogues), min(count, len(dialogues)))
    return [dialogue_sample(d, rng.choice(d.sample_indices()), loaded.annotations, loaded.profiles(d.split))
            for d in picked]


def choose_test_samples(loaded: LoadedData, options: BuildOptions, result: BuildResult) -> List[InstructionSample]:
    """The test samples: those of options.test_ids, or the paper's seeded sample (module docstring).
    Test ids that cannot be built are added to result.missing_test_ids with the reason."""
    if options.test_ids is not None:
        return _samples_from_ids(loaded, options.test_ids, result)
    return _sampled_split(loaded, options, result)


def _sampled_split(loaded: LoadedData, options: BuildOptions, result: BuildResult) -> List[InstructionSample]:
    """The paper's split, seeded. Each (type, character) draws from its own seeded generator, so
    adding a character or a dialogue type does not change the others' samples."""
    chosen: List[InstructionSample] = []
    by_owner: Dict[Tuple[str, str, str], List[Dialogue]] = defaultdict(list)
    for split, dialogues in loaded.dialogues.items():
        for d in dialogues:
            by_owner[(split, d.type, d.owner.name)].append(d)
    in_names = list(loaded.splits[IN_DISTRIBUTION].characters)
    for dialogue_type in DIALOGUE_TYPES:
        available = [n for n in in_names if by_owner[(IN_DISTRIBUTION, dialogue_type, n)]]
        quotas = _even_quotas(available, options.in_test_per_type, random.Random(f"{options.seed}:{dialogue_type}"))
        for name in available:
            rng = random.Random(f"{options.seed}:{IN_DISTRIBUTION}:{dialogue_type}:{name}")
            picked = _random_sample(by_owner[(IN_DISTRIBUTION, dialogue_type, name)], quotas[name], rng, loaded)
            if len(picked) < quotas[name]:
                result.missing_test_ids.append((f"(In-Test {dialogue_type} of {name})", f"only {len(picked)} usable "
                                                f"dialogues for a quota of {quotas[name]}"))
            chosen += picked
    if OUT_OF_DISTRIBUTION in loaded.splits:
        for dialogue_type in DIALOGUE_TYPES:
            for name in loaded.splits[OUT_OF_DISTRIBUTION].characters:
                for source in SOURCES:
                    pool = [d for d in by_owner[(OUT_OF_DISTRIBUTION, dialogue_type, name)] if d.source == source]
                    rng = random.Random(f"{options.seed}:{OUT_OF_DISTRIBUTION}:{dialogue_type}:{name}:{source}")
                    chosen += _random_sample(pool, 1, rng, loaded)
    return chosen


# --- images --------------------------------------------------------------------------------------

class _ImageCheck:
    """Looks each image up once; counts missing ones by top folder (e.g. COCO)."""

    def __init__(self, image_root: Path):
        self.image_root = image_root
        self._exists: Dict[str, bool] = {}

    def exists(self, image: str) -> bool:
        if image not in self._exists:
            self._exists[image] = (self.image_root / image).is_file()
        return self._exists[image]

    def summary(self) -> dict:
        missing = [image for image, found in self._exists.items() if not found]
        return {
            "image_root": str(self.image_root),
            "distinct_images": len(self._exists),
            "missing_files": len(missing),
            "missing_by_folder": dict(Counter(image.split("/", 1)[0] for image in missing).most_common()),
        }


# --- the build -----------------------------------------------------------------------------------

def build(options: BuildOptions, log: Callable[[str], None] = print) -> BuildResult:
    result = BuildResult()
    loaded = load_data(options.data_root, options.dialogues_root)
    result.skips = list(loaded.skips)
    test_samples = choose_test_samples(loaded, options, result)
    images = _ImageCheck(Path(options.image_dir) if options.image_dir else Path(options.data_root) / "images")
    test_samples = _with_images(test_samples, "test", images, options.check_images, result)
    test_dialogues = {s.dialogue_id for s in test_samples}
    result.test = _write_test_sets(test_samples, Path(options.output_dir) / "test")
    train_counts = _write_train_set(loaded, test_dialogues, images, options, result)
    result.stats = _statistics(loaded, test_samples, train_counts, images, result, options.check_images)
    _write_reports(result, Path(options.output_dir))
    for line in format_examples(result) + format_statistics(result.stats):
        log(line)
    return result


def _with_images(samples: Iterable[InstructionSample], part: str, images: _ImageCheck, check: bool,
                 result: BuildResult) -> List[InstructionSample]:
    """The samples to write; those whose image file is missing are counted, and skipped if `check`."""
    kept = []
    for sample in samples:
        if not images.exists(sample.image):
            result.missing_image_samples[part] += 1
            if check:
                result.skips.append(Skip(sample.dialogue_id, sample.id, "missing_image",
                                         f"image not found: {images.image_root / sample.image}"))
                continue
        kept.append(sample)
    return kept


def _write_test_sets(samples: Sequence[InstructionSample], test_dir: Path) -> Dict[Tuple[str, str], int]:
    grouped: Dict[Tuple[str, str], List[dict]] = defaultdict(list)
    for sample in samples:
        grouped[(sample.split, sample.type)].append(sample.test_record())
    for split in SPLITS:
        if not any(key[0] == split for key in grouped):
            continue  # no test data for this split at all: write nothing rather than empty files
        for dialogue_type in DIALOGUE_TYPES:
            atomic_write_json(test_dir / split / f"{dialogue_type}_test.json", grouped[(split, dialogue_type)])
    return {key: len(records) for key, records in grouped.items() if records}


def _write_train_set(loaded: LoadedData, test_dialogues: set, images: _ImageCheck, options: BuildOptions,
                     result: BuildResult) -> Counter:
    """Every sample of every in-distribution dialogue that gave no test sample, in file order.
    One JSON object a line inside the list: valid JSON, and a diff or grep shows single samples.
    Streamed to disk (the full set is ~450 MB) and renamed into place when complete."""
    counts = Counter()
    profiles = loaded.profiles(IN_DISTRIBUTION)
    with atomic_text_writer(Path(options.output_dir) / "train" / "train.json") as out:
        out.write("[")
        separator = "\n"
        for dialogue in loaded.dialogues[IN_DISTRIBUTION]:
            if dialogue.id in test_dialogues:
                continue
            samples = _with_images(dialogue_samples(dialogue, loaded.annotations, profiles), "train", images,
                                   options.check_images, result)
            for sample in samples:
                out.write(separator + json.dumps(sample.train_record(options.image_prefix), ensure_ascii=False))
                separator = ",\n"
            counts[dialogue.type] += len(samples)
            counts[f"{dialogue.type} dialogues"] += 1
        out.write("\n]\n")
    result.train = sum(counts[t] for t in DIALOGUE_TYPES)
    return counts


def _statistics(loaded: LoadedData, test_samples: Sequence[InstructionSample], train_counts: Counter,
                images: _ImageCheck, result: BuildResult, check_images: bool) -> dict:
    per_split = {}
    for split, raw in loaded.splits.items():
        dialogues = loaded.dialogues[split]
        per_split[split] = {
            "characters": len(raw.characters),
            "characters_with_profile": len(raw.profiles),
            "scripts": len(raw.roles),
            "records_read": loaded.records[split],
            "usable_dialogues": dict(Counter(d.type for d in dialogues)),
            "usable_dialogues_by_source": dict(Counter(f"{d.type}/{d.source}" for d in dialogues)),
        }
    for dialogue in loaded.dialogues[IN_DISTRIBUTION]:  # so the image summary covers training too
        images.exists(dialogue.image)
    return {
        "splits": per_split,
        "annotated_images": len(loaded.annotations),
        "images": images.summary(),
        "samples_with_missing_image": {"test": result.missing_image_samples["test"],
                                       "train": result.missing_image_samples["train"],
                                       "skipped": check_images},
        "train_samples": {t: train_counts[t] for t in DIALOGUE_TYPES},
        "train_dialogues": {t: train_counts[f"{t} dialogues"] for t in DIALOGUE_TYPES},
        "test_samples": {f"{split}/{t}": n for (split, t), n in sorted(result.test.items())},
        "test_dialogues": len({s.dialogue_id for s in test_samples}),
        "skipped": dict(Counter(s.reason for s in result.skips).most_common()),
        "test_ids_not_built": len(result.missing_test_ids),
    }


def _write_reports(result: BuildResult, output_dir: Path) -> None:
    skipped = [{"path": s.path, "item": s.item, "reason": s.reason, "detail": s.detail} for s in result.skips]
    skipped += [{"path": "--test_ids", "item": i, "reason": "test_id_not_built", "detail": why}
                for i, why in result.missing_test_ids]
    atomic_write_jsonl(output_dir / "skipped.jsonl", skipped)
    atomic_write_json(output_dir / "build_stats.json", result.stats)


def format_statistics(stats: dict) -> List[str]:
    lines = []
    for split, info in stats["splits"].items():
        lines.append(f"[{split}] {info['characters']} characters ({info['characters_with_profile']} with a profile) "
                     f"in {info['scripts']} scripts; {info['records_read']} dialogue records read; usable: "
                     + ", ".join(f"{t} {n}" for t, n in info["usable_dialogues"].items()))
    img = stats["images"]
    lines.append(f"images: {img['distinct_images']} distinct, {stats['annotated_images']} annotated, "
                 f"{img['missing_files']} without a file under {img['image_root']}"
                 + (f" (by folder: {img['missing_by_folder']})" if img["missing_files"] else ""))
    missing = stats["samples_with_missing_image"]
    if missing["test"] or missing["train"]:
        lines.append(f"samples whose image file is missing: {missing['test']} test, {missing['train']} train "
                     + ("(skipped: --check_images)" if missing["skipped"] else "(kept; --check_images skips them)"))
    lines.append("train: " + ", ".join(f"{t} {n} samples from {stats['train_dialogues'][t]} dialogues"
                                       for t, n in stats["train_samples"].items()))
    lines.append("test: " + (", ".join(f"{k} {n}" for k, n in stats["test_samples"].items()) or "none")
                 + f" ({stats['test_dialogues']} dialogues held out of training)")
    if stats["skipped"]:
        lines.append("skipped: " + ", ".join(f"{reason} {n}" for reason, n in stats["skipped"].items())
                     + " (every item in skipped.jsonl)")
    if stats["test_ids_not_built"]:
        lines.append(f"test samples not built: {stats['test_ids_not_built']} (listed in skipped.jsonl)")
    return lines


def format_examples(result: BuildResult, per_reason: int = 2) -> List[str]:
    """A few skipped items of each reason and the first test ids not built, for the console."""
    lines, shown = [], Counter()
    for skip in result.skips:
        if shown[skip.reason] < per_reason:
            shown[skip.reason] += 1
            lines.append(f"  skipped ({skip.reason}): {skip}")
    for item, why in result.missing_test_ids[:10]:
        lines.append(f"  test sample {item} not built: {why}")
    if len(result.missing_test_ids) > 10:
        lines.append(f"  ... {len(result.missing_test_ids) - 10} more test ids not built (see skipped.jsonl)")
    return lines
