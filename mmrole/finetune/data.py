"""Training data for finetune.py: read and check the samples, preprocess lazily, pad per batch, read images per batch.

Input: the Qwen-VL fine-tuning format, as a JSON list or as JSON lines (what data_prep/build_data.py and
eval/build_RM_data.py write):

    {"id": ..., "system": optional str, "conversations": [{"from": "user"|"assistant", "value": str}, ...]}

with images written into the text as `Picture N: <img>path</img>`. Image paths are resolved against `image_dir`
(default: the working directory, as the original, whose model opened the path written in the prompt).

Before training every sample is checked once (`scan`): its structure, its images (present and readable), and its
token length (so truncation is counted and length-grouped batching needs no second pass). A sample that cannot be
trained on is reported with its id and left out: malformed JSON, an unknown role, no assistant turn, a missing or
unreadable image, or no assistant token left within model_max_length. Tensors are built when a sample is drawn.

The data file is read with mmrole.common.records.read_records (shared with data_prep/export.py).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from ..common.problems import Problem
from ..common.records import DataFileError, read_records  # noqa: F401  (DataFileError: part of this module's API)
from ..common.store import PathLike, atomic_write_jsonl
from ..qwen_vl.image_processing_qwen import load_image, preprocess_image, span_image_path
from .preprocess import DEFAULT_SYSTEM, ROLES, USER, ChatMLEncoder, collate_padded


class BatchImageError(RuntimeError):
    """An image that passed the start-up scan cannot be read when its batch is built (moved or deleted since):
    training stops rather than go on without it (the message names the samples and the path)."""


@dataclass(frozen=True)
class TrainSample:
    id: str
    conversations: Tuple[Mapping[str, str], ...]
    system: Optional[str]  # None: the sample names none


@dataclass(frozen=True)
class DataOptions:
    """model_max_length, the system prompt policy and where images are found.

    use_sample_system: train each sample with its own `system` (default). False reproduces the original, which
    used `default_system` for every sample. image_dir: None = relative to the working directory.
    """

    max_len: int
    use_sample_system: bool = True
    default_system: str = DEFAULT_SYSTEM
    image_dir: Optional[PathLike] = None

    def system_of(self, sample: TrainSample) -> str:
        if self.use_sample_system and sample.system is not None:
            return sample.system
        return self.default_system

    def resolve_image(self, path: str) -> str:
        return os.path.join(os.fspath(self.image_dir), path) if self.image_dir is not None else path


# --- reading and checking records ---------------------------------------------------------------------------

def check_record(record: object, place: str, path: PathLike) -> Union[TrainSample, Problem]:
    """A TrainSample, or a Problem naming the sample (its id, else its place in the file) and what is wrong."""
    if not isinstance(record, dict):
        return Problem(str(path), place, f"not a JSON object: got {type(record).__name__}")
    sample_id = str(record["id"]) if record.get("id") is not None else place

    def problem(message: str) -> Problem:
        return Problem(str(path), sample_id, message)

    system = record.get("system")
    if system is not None and not isinstance(system, str):
        return problem(f"bad system: `system` must be a string, got {type(system).__name__}")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return problem("bad conversations: `conversations` must be a non-empty list of {from, value} turns")
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            return problem(f"bad conversations: turn {number} is not a JSON object")
        role = turn.get("from")
        if role not in ROLES:
            return problem(f"unknown role: turn {number} has `from` {role!r} (expected 'user' or 'assistant')")
        if not isinstance(turn.get("value"), str):
            return problem(f"bad conversations: turn {number} ({role}) has no text `value`")
    trained = turns[1:] if turns[0]["from"] != USER else turns  # the opening assistant turn is dropped
    if not any(turn["from"] != USER for turn in trained):
        return problem("no assistant turn: nothing to train on after the first user turn")
    return TrainSample(sample_id, tuple(turns), system)


def load_samples(path: PathLike) -> Tuple[List[TrainSample], List[Problem]]:
    """Every usable sample of a data file, and a Problem for each one left out."""
    entries, problems = read_records(path)
    samples = []
    for place, record in entries:
        checked = check_record(record, place, path)
        (samples if isinstance(checked, TrainSample) else problems).append(checked)
    return samples, problems


# --- the start-up scan ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScanEntry:
    """What the scan learnt about sample `index`: its trained length, or why it is left out."""

    index: int
    length: int = 0
    truncated: bool = False
    problem: Optional[Problem] = None


def image_paths(input_ids: Sequence[int], encoder: ChatMLEncoder) -> List[str]:
    """The paths written inside the <img>...</img> spans of `input_ids`, in order."""
    paths, start = [], None
    for position, token in enumerate(input_ids):
        if token == encoder.image_start:
            start = position
        elif token == encoder.image_end and start is not None:
            paths.append(span_image_path(list(input_ids[start + 1 : position]), encoder.tokenizer.img_pad_id))
            start = None
    return paths


class SampleScanner:
    """Encodes samples and checks their images (each distinct file is opened once)."""

    def __init__(self, encoder: ChatMLEncoder, options: DataOptions, path: PathLike):
        self.encoder = encoder
        self.options = options
        self.path = str(path)
        self._image_errors: Dict[str, Optional[str]] = {}

    def image_error(self, resolved: str) -> Optional[str]:
        if resolved not in self._image_errors:
            try:
                load_image(resolved)
                self._image_errors[resolved] = None
            except (OSError, ValueError) as err:
                self._image_errors[resolved] = str(err)
        return self._image_errors[resolved]

    def scan(self, index: int, sample: TrainSample) -> ScanEntry:
        def left_out(message: str) -> ScanEntry:
            return ScanEntry(index, problem=Problem(self.path, sample.id, message))

        try:
            tokenized = self.encoder.encode_conversation(
                sample.conversations, self.options.system_of(sample), self.options.max_len
            )
            paths = image_paths(tokenized.input_ids, self.encoder)
        except ValueError as err:  # an unclosed <img>, a path too long for its span, ...
            return left_out(f"cannot be tokenized: {err}")
        for path in paths:
            error = self.image_error(self.options.resolve_image(path))
            if error is not None:
                return left_out(f"missing or unreadable image: {path!r}: {error}")
        if not tokenized.has_answer:
            return left_out(
                f"no assistant token within model_max_length: the sample has {tokenized.full_length} tokens, "
                f"model_max_length is {self.options.max_len}"
            )
        return ScanEntry(index, len(tokenized.input_ids), tokenized.truncated)


@dataclass
class DataReport:
    """What loading found: samples read, samples kept, Problems (left out) and truncated sample ids."""

    path: str
    read: int = 0
    problems: List[Problem] = field(default_factory=list)
    truncated: List[str] = field(default_factory=list)
    max_len: int = 0

    @property
    def kept(self) -> int:
        return self.read - len(self.problems)

    def lines(self, examples: int = 20) -> List[str]:
        """The start-of-training summary: counts, reasons, the first `examples` skipped samples."""
        out = [f"{self.path}: {self.read} samples, {self.kept} used, {len(self.problems)} skipped"]
        if self.problems:
            reasons = Counter(_reason(problem.message) for problem in self.problems)
            out += [f"  skipped ({count}): {reason}" for reason, count in reasons.most_common()]
            out += [f"  {problem}" for problem in self.problems[:examples]]
            if len(self.problems) > examples:
                out.append(f"  ... and {len(self.problems) - examples} more")
        if self.truncated:
            shown = ", ".join(self.truncated[:examples]) + (" ..." if len(self.truncated) > examples else "")
            out.append(f"  {len(self.truncated)} samples are longer than model_max_length={self.max_len} "
                       f"and are truncated: {shown}")
        return out

    def problem_records(self) -> List[dict]:
        return [{"file": p.path, "id": p.sample_id, "reason": p.message} for p in self.problems]


def _reason(message: str) -> str:
    """The kind of a problem: every message starts with it, details follow the first colon."""
    return message.split(":")[0]


# --- dataset and collator -------------------------------------------------------------------------------------

class SupervisedDataset(Dataset):
    """The kept samples; an item is built when drawn (or all at once when lazy=False, as the original's eager mode).

    `lengths` (trained token counts, from the scan) feeds length-grouped batching.
    """

    def __init__(self, samples: Sequence[TrainSample], lengths: Sequence[int], encoder: ChatMLEncoder,
                 options: DataOptions, lazy: bool = True):
        self.samples = list(samples)
        self.lengths = list(lengths)
        self.encoder = encoder
        self.options = options
        self._items = None if lazy else [self._build(i) for i in range(len(self.samples))]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self._items[index] if self._items is not None else self._build(index)

    def _build(self, index: int) -> dict:
        """{"id", "tokenized": Tokenized, "images": [resolved paths in order of appearance]}."""
        sample = self.samples[index]
        tokenized = self.encoder.encode_conversation(
            sample.conversations, self.options.system_of(sample), self.options.max_len
        )
        images = [self.options.resolve_image(path) for path in image_paths(tokenized.input_ids, self.encoder)]
        return {"id": sample.id, "tokenized": tokenized, "images": images}


class SupervisedCollator:
    """Right-pads a batch (to its longest sample, or to `pad_to` = model_max_length as the original) and reads its
    images. Returns input_ids, labels, attention_mask [B, L] and, when the batch has images,
    pixel_values [n_images, 3, S, S] in order of appearance (each distinct file read once)."""

    def __init__(self, pad_token_id: int, image_size: int, pad_to: Optional[int] = None):
        self.pad_token_id = pad_token_id
        self.image_size = image_size
        self.pad_to = pad_to

    def __call__(self, items: Sequence[dict]) -> Dict[str, torch.Tensor]:
        batch = collate_padded([item["tokenized"] for item in items], self.pad_token_id, length=self.pad_to)
        paths = [(item["id"], path) for item in items for path in item["images"]]
        if paths:
            batch["pixel_values"] = self._pixels(paths)
        return batch

    def _pixels(self, paths: Sequence[Tuple[str, str]]) -> torch.Tensor:
        position: Dict[str, int] = {}
        pixels = []
        for _, path in paths:
            if path in position:
                continue
            try:
                pixels.append(preprocess_image(path, self.image_size))
            except (OSError, ValueError) as err:
                users = ", ".join(sorted({other for other, used in paths if used == path}))
                raise BatchImageError(
                    f"sample {users}: image {path} cannot be read any more (it passed the start-up check): {err}. "
                    "Restore it, or rerun: the check then skips the sample and training resumes from the last "
                    "checkpoint"
                ) from err
            position[path] = len(pixels) - 1
        return torch.stack(pixels)[[position[path] for _, path in paths]]


# --- putting it together --------------------------------------------------------------------------------------

Gather = Callable[[List[ScanEntry]], List[ScanEntry]]


def build_dataset(
    path: PathLike,
    tokenizer,
    options: DataOptions,
    *,
    lazy: bool = True,
    shard: Tuple[int, int] = (0, 1),
    gather: Optional[Gather] = None,
) -> Tuple[SupervisedDataset, DataReport]:
    """Read, check and scan a data file: (dataset of the usable samples, report of what was left out).

    shard=(rank, world) with `gather` (all ranks' entries -> one list) splits the scan over processes.
    """
    samples, problems = load_samples(path)
    encoder = ChatMLEncoder(tokenizer)
    scanner = SampleScanner(encoder, options, path)
    rank, world = shard
    if world > 1 and gather is None:
        raise ValueError("a scan split over processes needs `gather` to collect the other processes' entries")
    entries = [scanner.scan(i, samples[i]) for i in range(rank, len(samples), world)]
    if gather is not None:
        entries = gather(entries)
    entries.sort(key=lambda entry: entry.index)
    report = DataReport(str(path), read=len(samples) + len(problems), problems=problems, max_len=options.max_len)
    kept, lengths = [], []
    for entry in entries:
        if entry.problem is not None:
            report.problems.append(entry.problem)
            continue
        kept.append(samples[entry.index])
        lengths.append(entry.length)
        if entry.truncated:
            report.truncated.append(samples[entry.index].id)
    return SupervisedDataset(kept, lengths, encoder, options, lazy=lazy), report


def write_report(report: DataReport, path: PathLike) -> None:
    """The skipped samples as JSON lines (file, id, reason), written atomically."""
    atomic_write_jsonl(path, report.problem_records())
