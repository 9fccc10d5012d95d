"""Judge reviews -> reward-model training samples (how MMRole-Eval's reward model was taught).

Every review that parses into a score pair becomes one sample in the Qwen-VL fine-tuning format:
`{id, system, conversations: [{from: user, value: "Picture 1: <img>IMAGE</img>\\n" + judge prompt},
{from: assistant, value: review}]}` with the evaluator system prompt and the same judge prompt the
review was asked with (A = evaluated answer, B = ground truth; swapped reviews the other way round).
Reviews without a parseable score pair, or whose stored score disagrees with their text, are
reported and left out: the model must never learn an answer format the parser rejects.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

from ..common.list_format import from_list_format
from ..common.metrics import ABBR_OF, METRIC_NAMES, parse_score_pair
from ..common.problems import Problem
from ..common.prompts import EVALUATOR_SYSTEM
from ..common.store import PathLike
from .files import REVIEW_KEY, SWAPPED_REVIEW_KEY, SchemaError, image_problems, load_test_samples, score_pair_of
from .review import NORMAL, SWAPPED, review_request


def training_sample(sample_id: str, user_text: str, image: str, review: str) -> dict:
    return {
        "id": sample_id,
        "system": EVALUATOR_SYSTEM,
        "conversations": [
            {"from": "user", "value": from_list_format([{"image": image}, {"text": user_text}])},
            {"from": "assistant", "value": review},
        ],
    }


def rm_training_samples(
    reviews_path: PathLike, image_dir: PathLike, *, include_swapped: bool = False, check_images: bool = True
) -> Tuple[List[dict], List[Problem]]:
    """The training samples of one reviews file (8 per fully reviewed sample), and what was left out.

    Ids are `<reviews folder name>/<sample id>_<metric abbreviation>[_swapped]`: the folder (the
    reviewed model) keeps the samples of several models apart.
    """
    samples, problems = load_test_samples(reviews_path, need_answer=True)
    if check_images:  # a training sample whose image is missing would stop the trainer
        samples, missing = image_problems(samples, image_dir, reviews_path)
        problems += missing
    prefix = Path(reviews_path).parent.name
    orders = ((NORMAL, REVIEW_KEY), (SWAPPED, SWAPPED_REVIEW_KEY)) if include_swapped else ((NORMAL, REVIEW_KEY),)
    out: List[dict] = []
    for sample in samples:
        if not sample.raw.get(REVIEW_KEY):
            problems.append(Problem(str(reviews_path), sample.id, "no review (e.g. empty answer)"))
            continue
        for order, key in orders:
            reviews = sample.raw.get(key) or {}
            for metric in METRIC_NAMES:
                entry = reviews.get(metric)
                if entry is None:
                    if order == NORMAL:
                        problems.append(Problem(str(reviews_path), sample.id, "no review", metric=metric))
                    continue
                text = entry.get("review") if isinstance(entry, dict) else None
                parsed = parse_score_pair(text)
                if parsed is None:
                    problems.append(Problem(str(reviews_path), sample.id, "review without a parseable score pair",
                                            metric=metric))
                    continue
                stored = score_pair_of(entry)
                if stored is not None and stored != parsed:
                    problems.append(Problem(str(reviews_path), sample.id,
                                            f"stored score {list(stored)} disagrees with the review text {list(parsed)}",
                                            metric=metric))
                    continue
                request = review_request(sample, metric, order, image_dir)
                suffix = ABBR_OF[metric] + ("" if order == NORMAL else "_swapped")
                out.append(training_sample(f"{prefix}/{sample.id}_{suffix}", request.query[1]["text"],
                                           request.query[0]["image"], text))
    return out, problems


def build_rm_data(
    inputs: Sequence[Path], image_dir: PathLike, *, include_swapped: bool = False, check_images: bool = True
) -> Tuple[List[dict], List[Problem]]:
    """The training samples of many reviews files, and every review left out. A file that cannot
    be read is one Problem with whole_file set; the other files go on."""
    samples: List[dict] = []
    problems: List[Problem] = []
    for path in inputs:
        try:
            more, skipped = rm_training_samples(path, image_dir, include_swapped=include_swapped,
                                                check_images=check_images)
        except SchemaError as e:
            problems.append(e.problem())
            continue
        samples += more
        problems += skipped
    return samples, problems
