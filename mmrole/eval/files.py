"""The files of MMRole-Eval: test samples, answers and reviews, listed, loaded and validated, with errors that name
file and sample; and the check that their images can be shown to a model.

The published files (`*_test.json` test sets, answers files with `conversations[1].answer`,
reviews files with `rm_review`) are JSON lists of records:
`{id, system, image, conversations: [{from, value}, {from, value[, answer]}], role, script,
other_role[, rm_review]}`. A file that cannot be read at all raises `SchemaError`; a record that
cannot be used becomes a `Problem` (file, sample id, reason) so that callers report it, skip it
and go on with the rest.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..common.images import image_file_problem
from ..common.metrics import METRIC_NAMES, score_pair_problem
from ..common.problems import Problem
from ..common.store import PathLike

ScorePair = Tuple[float, float]

REVIEW_KEY = "rm_review"  # reviews in the presented order: A = evaluated answer, B = ground truth
SWAPPED_REVIEW_KEY = "rm_review_swapped"  # --swap: A = ground truth, B = evaluated answer


class SchemaError(ValueError):
    """A file (or one of its records) that cannot be used; the message names both."""

    def __init__(self, path: PathLike, message: str, sample_id: Optional[str] = None):
        where = f"{path}" if sample_id is None else f"{path}: sample {sample_id}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.sample_id = sample_id
        self.reason = message

    def problem(self) -> Problem:
        """This error as the Problem of a file that could not be used at all (the other files go on)."""
        return Problem(self.path, self.sample_id or "*", self.reason, whole_file=True)


@dataclass(frozen=True)
class TestSample:
    """One test sample; `raw` is the record exactly as read (outputs extend a copy of it)."""

    raw: Mapping[str, Any]
    id: str
    image: str
    question: str
    ground_truth: str
    role: str
    script: str
    other_role: str
    answer: Optional[str]  # None when the record has no `conversations[1].answer`
    index: int = -1  # position in its file: outputs are matched to records by it, never by id

    def image_path(self, image_dir: PathLike) -> str:
        """The path string the original scripts built; it is part of Qwen-VL's prompt tokens."""
        return os.path.join(str(image_dir), self.image)


def load_json_list(path: PathLike) -> List[Any]:
    """A JSON file holding a list, or SchemaError naming the file (and line, for bad JSON)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(path, f"cannot read: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(path, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, list):
        raise SchemaError(path, f"expected a JSON list of samples, found {type(data).__name__}")
    return data


def _sample_label(record: Any, index: int) -> str:
    if isinstance(record, dict) and isinstance(record.get("id"), str) and record["id"]:
        return record["id"]
    return f"#{index}"  # no usable id: name it by its position in the file


def _text_field(record: Mapping[str, Any], name: str) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"missing or empty `{name}`")
    return value


def parse_sample(
    record: Any, *, need_ground_truth: bool = True, need_answer: bool = False
) -> TestSample:
    """Validate one record; ValueError with the reason when it cannot be used."""
    if not isinstance(record, dict):
        raise ValueError(f"expected an object, found {type(record).__name__}")
    sample_id = _text_field(record, "id")
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or len(conversations) < 2 or not all(
        isinstance(turn, dict) for turn in conversations[:2]
    ):
        raise ValueError("`conversations` must hold the user turn and the assistant turn")
    question = conversations[0].get("value")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("empty question (conversations[0].value)")
    ground_truth = conversations[1].get("value")
    if not isinstance(ground_truth, str):
        ground_truth = ""
    if need_ground_truth and not ground_truth.strip():
        raise ValueError("empty ground truth (conversations[1].value)")
    answer = conversations[1].get("answer")
    if "answer" in conversations[1] and not isinstance(answer, str):
        raise ValueError(f"`conversations[1].answer` is {type(answer).__name__}, not text")
    if need_answer and answer is None:
        raise ValueError("no answer (conversations[1].answer): run inference on this file first")
    return TestSample(
        raw=record,
        id=sample_id,
        image=_text_field(record, "image"),
        question=question,
        ground_truth=ground_truth,
        role=_text_field(record, "role"),
        script=_text_field(record, "script"),
        other_role=_text_field(record, "other_role"),
        answer=answer,
    )


def load_test_samples(
    path: PathLike, *, need_ground_truth: bool = True, need_answer: bool = False
) -> Tuple[List[TestSample], List[Problem]]:
    """The usable samples of a test/answers file, and a Problem for every record skipped.

    Duplicate ids are problems too: results are keyed by sample id.
    """
    samples: List[TestSample] = []
    problems: List[Problem] = []
    seen: Dict[str, int] = {}  # sample id -> index of its first record
    for index, record in enumerate(load_json_list(path)):
        label = _sample_label(record, index)
        try:
            sample = parse_sample(record, need_ground_truth=need_ground_truth, need_answer=need_answer)
        except ValueError as e:
            problems.append(Problem(str(path), label, str(e)))
            continue
        if sample.id in seen:
            problems.append(Problem(str(path), label, f"duplicate sample id (record #{index}; only the first "
                                                       f"record #{seen[sample.id]} is used, this one gets nothing)"))
            continue
        seen[sample.id] = index
        samples.append(replace(sample, index=index))
    return samples, problems


def score_pair_of(entry: Any) -> Optional[ScorePair]:
    """The score pair of one `rm_review[metric]` entry, or None when it holds no valid pair.

    The original wrote `{}` as the score of a review it could not parse.
    """
    if not isinstance(entry, dict):
        return None
    score = entry.get("score")
    if not isinstance(score, (list, tuple)) or len(score) != 2:
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in score):
        return None
    return float(score[0]), float(score[1])


@dataclass(frozen=True)
class ReviewedSample:
    """A sample of a reviews file with the score pair of each metric (None: failed/missing)."""

    id: str
    reviewed: bool  # False: no `rm_review` at all (empty answer in the original, or never reviewed)
    empty_answer: bool
    scores: Dict[str, Optional[ScorePair]]


def read_reviews(
    path: PathLike, *, review_key: str = REVIEW_KEY, metrics: Sequence[str] = METRIC_NAMES
) -> Tuple[List[ReviewedSample], List[Problem]]:
    """Every sample of a reviews file with its scores, and a Problem for each unusable review.

    A sample without a review, a metric without a valid score pair (or with a score outside
    metrics.SCORE_RANGE), and a second record with the same sample id are problems: they are listed,
    never scored (a duplicate id is not counted at all). A sample whose answer is empty and that has
    no review is the original's deliberate skip (Problem.deliberate).
    """
    reviewed: List[ReviewedSample] = []
    problems: List[Problem] = []
    first_record: Dict[str, int] = {}
    for index, record in enumerate(load_json_list(path)):
        label = _sample_label(record, index)
        if not isinstance(record, dict):
            problems.append(Problem(str(path), label, f"expected an object, found {type(record).__name__}"))
            continue
        if label in first_record:
            problems.append(Problem(str(path), label, f"duplicate sample id (record #{index}): not counted, the first "
                                                      f"record #{first_record[label]} is"))
            continue
        first_record[label] = index
        conversations = record.get("conversations")
        answer = None
        if isinstance(conversations, list) and len(conversations) > 1 and isinstance(conversations[1], dict):
            answer = conversations[1].get("answer")
        empty_answer = isinstance(answer, str) and not answer.strip()
        review = record.get(review_key)
        if not review:
            reason = "empty answer: not reviewed" if empty_answer else f"no `{review_key}`: not reviewed"
            problems.append(Problem(str(path), label, reason, deliberate=empty_answer))
            reviewed.append(ReviewedSample(label, False, empty_answer, {m: None for m in metrics}))
            continue
        if not isinstance(review, dict):
            problems.append(Problem(str(path), label, f"`{review_key}` is not an object"))
            reviewed.append(ReviewedSample(label, False, empty_answer, {m: None for m in metrics}))
            continue
        scores: Dict[str, Optional[ScorePair]] = {}
        for metric in metrics:
            pair = score_pair_of(review.get(metric))
            if pair is None:
                why = "no review" if metric not in review else "review without a valid score pair"
                problems.append(Problem(str(path), label, why, metric=metric))
            elif score_pair_problem(pair):
                problems.append(Problem(str(path), label, f"{score_pair_problem(pair)}: not a score", metric=metric))
                pair = None
            elif pair[1] == 0:
                problems.append(Problem(str(path), label, "ground-truth score 0: no ratio", metric=metric))
                pair = None
            scores[metric] = pair
        reviewed.append(ReviewedSample(label, True, empty_answer, scores))
    return reviewed, problems


def input_files(input_dir: PathLike, input_file: Optional[str], suffix: str = ".json") -> List[Path]:
    """The files a script works on: `input_file` inside `input_dir`, or every `*suffix` there
    (sorted, so runs are repeatable; the original used os.listdir order)."""
    input_dir = Path(input_dir)
    if input_file is not None:
        path = input_dir / input_file
        if not path.is_file():
            raise SchemaError(path, "no such file")
        return [path]
    if not input_dir.is_dir():
        raise SchemaError(input_dir, "no such directory")
    found = sorted(p for p in input_dir.iterdir() if p.name.endswith(suffix) and p.is_file())
    if not found:
        raise SchemaError(input_dir, f"no *{suffix} files here: nothing to do")
    return found


def image_problems(
    samples: Sequence[TestSample], image_dir: PathLike, path: PathLike
) -> Tuple[List[TestSample], List[Problem]]:
    """Split samples into those whose image can be shown to a model and a Problem (file, sample id, image
    path) for each image that is missing, unreadable, not an image or damaged (common.images.image_file_problem):
    checked before any request is sent, each image file once."""
    kept, problems = [], []
    verdicts: Dict[str, Optional[str]] = {}
    for sample in samples:
        image = sample.image_path(image_dir)
        if image not in verdicts:
            verdicts[image] = image_file_problem(image)
        if verdicts[image] is None:
            kept.append(sample)
        else:
            problems.append(Problem(str(path), sample.id, f"{verdicts[image]}: {image}"))
    return kept, problems
