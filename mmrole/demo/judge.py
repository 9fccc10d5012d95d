"""The demo's stand-in for the GPT-4 judge: templated reviews of candidate answers to training samples,
from which eval/build_RM_data.py makes the reward model's training data (as the paper did with GPT-4).

    python -m mmrole.demo.judge --data_root demo_output/MMRole-Data --train_file demo_output/data/train/train.json \\
        --output_dir demo_output/judge_reviews/demo-templated-judge [--samples 40] [--seed 0]

There is no GPT-4 in the demo, so nothing here judges: the scores follow a fixed rule, stated here.
For each chosen training sample (of the demo dataset, mmrole.demo.data) one candidate answer is made
from the ground truth, cycling through these kinds:

    faithful         the ground truth itself                                  no defect
    word_salad       the ground truth's words in a shuffled order             word_salad
    repetitive       the catchphrase said over and over                       repetitive
    no_catchphrase   the ground truth without the character's catchphrase     no_catchphrase
    wrong_colour     the ground truth with the image's colour word swapped    wrong_colour
    other_character  what another character would say about the image         wrong_character
    assistant        "As an AI assistant, ... a <colour> <shape>."            assistant_style + no_catchphrase
    off_topic        the catchphrase, then talk about the weather             off_topic

Per metric, Model B (the ground truth) scores 9 and Model A (the candidate) 9 minus the PENALTIES of
its defects for that metric (at least 1). Each review names the worst defect for the metric (or says
both are fine) and ends with the judge format `[Scores]: (A, B)`. The output files are review files
(test-sample schema + `answer` + `rm_review`), exactly what eval/GPT_review.py writes.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from ..common.cli import EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser
from ..common.metrics import METRIC_NAMES
from ..common.store import atomic_write_json
from ..data.raw import IN_DISTRIBUTION, load_annotations, load_dialogues, load_split
from ..data.samples import dialogue_samples
from .data import (CHARACTERS, COLOURS, DemoImage, character, colour_word, join_sentences, read_manifest, remark,
                   shape_word)

JUDGE_SCORE_B = 9
VARIANTS = ("faithful", "no_catchphrase", "wrong_colour", "word_salad", "other_character", "assistant", "off_topic",
            "repetitive")
DEFECTS = {"faithful": (), "no_catchphrase": ("no_catchphrase",), "wrong_colour": ("wrong_colour",),
           "word_salad": ("word_salad",), "repetitive": ("repetitive",),
           "other_character": ("wrong_character",), "assistant": ("assistant_style", "no_catchphrase"),
           "off_topic": ("off_topic",)}
# defect -> metric -> points taken from Model A's 9
PENALTIES: Dict[str, Dict[str, int]] = {
    "no_catchphrase": {"Tone Consistency": 5, "Personality Consistency": 2},
    "wrong_colour": {"Image-Text Relevance": 5, "Response Accuracy": 3, "Coherency": 1},
    "wrong_character": {"Personality Consistency": 5, "Knowledge Consistency": 4, "Tone Consistency": 4,
                        "Instruction Adherence": 2},
    "assistant_style": {"Instruction Adherence": 6, "Tone Consistency": 3, "Personality Consistency": 3},
    "off_topic": {"Image-Text Relevance": 6, "Response Accuracy": 6, "Coherency": 2},
    "word_salad": {"Fluency": 6, "Coherency": 5, "Response Accuracy": 3, "Instruction Adherence": 2},
    "repetitive": {"Fluency": 3, "Coherency": 4, "Image-Text Relevance": 5, "Response Accuracy": 5},
}
# Short fixed phrases: the review's wording is not the point, its format (ending in the score pair) is,
# and a tiny reward model learns a small vocabulary quickly. No commas: the only comma of a review is the
# one inside the score pair, so a briefly trained model never continues "(9," with words.
GOOD = {
    "Instruction Adherence": "stays in character without extra explanations",
    "Fluency": "is fluent and grammatical",
    "Coherency": "keeps a coherent thread",
    "Image-Text Relevance": "talks about what the image shows",
    "Response Accuracy": "answers the words it was given",
    "Personality Consistency": "shows the personality of the character",
    "Knowledge Consistency": "stays consistent with what the character knows",
    "Tone Consistency": "uses the catchphrase and tone of the character",
}
FLAWS = {
    "no_catchphrase": "never uses the catchphrase",
    "wrong_colour": "names the wrong colour",
    "wrong_character": "sounds like a different character",
    "assistant_style": "speaks like an AI assistant",
    "off_topic": "ignores the image and the words it was given",
    "word_salad": "is a jumble of words without grammar",
    "repetitive": "only repeats one phrase",
}


def scores(defects: Sequence[str], metric: str) -> Tuple[int, int]:
    """(Model A, Model B) for one metric under the rule above."""
    penalty = sum(PENALTIES[d].get(metric, 0) for d in defects)
    return max(1, JUDGE_SCORE_B - penalty), JUDGE_SCORE_B


def review_text(defects: Sequence[str], metric: str) -> str:
    score_a, score_b = scores(defects, metric)
    relevant = sorted((d for d in defects if PENALTIES[d].get(metric)), key=lambda d: -PENALTIES[d][metric])
    good = GOOD[metric]
    if relevant:
        judgement = f"Model A {FLAWS[relevant[0]]} while Model B {good}"
    else:
        judgement = f"Both models are fine here: each {good}"
    return f"{judgement}. [Scores]: ({score_a}, {score_b})"


def candidate(kind: str, record: dict, image: DemoImage, rng: random.Random) -> Tuple[str, Tuple[str, ...]]:
    """(answer, defects) of one kind for a sample, or the faithful answer when the kind does not apply."""
    truth = record["conversations"][1]["value"]
    role = character(record["role"])
    language = role.language
    colour, shape = colour_word(image.colour, language), shape_word(image.shape, language)
    if kind == "no_catchphrase" and truth.startswith(role.catchphrase):
        return truth[len(role.catchphrase):].strip(), DEFECTS[kind]
    if kind == "wrong_colour" and colour in truth:
        wrong = rng.choice([c for c in COLOURS if c != image.colour])
        return truth.replace(colour, colour_word(wrong, language)), DEFECTS[kind]
    if kind == "other_character":
        others = [c for c in CHARACTERS if c.language == language and c.name not in (role.name, record["other_role"])]
        other = rng.choice(others)
        return join_sentences(other, other.catchphrase, remark(other, image, rng)), DEFECTS[kind]
    if kind == "assistant":
        return ((f"作为一个AI助手，我可以告诉你图片里有一个{colour}的{shape}。" if language == "Chinese"
                 else f"As an AI assistant, I can tell you that the image shows a {colour} {shape}."), DEFECTS[kind])
    if kind == "word_salad":
        pieces = list(truth) if language == "Chinese" else truth.split()
        rng.shuffle(pieces)
        return ("" if language == "Chinese" else " ").join(pieces), DEFECTS[kind]
    if kind == "repetitive":
        return join_sentences(role, *[role.catchphrase] * 4), DEFECTS[kind]
    if kind == "off_topic":
        return join_sentences(role, role.catchphrase, "我今天只想聊聊天气。" if language == "Chinese"
                     else "I would rather talk about the weather today."), DEFECTS[kind]
    return truth, ()


def training_records(data_root: Path, train_ids: Set[str]) -> List[dict]:
    """The training samples of the demo dataset in the test-sample schema (prompt, ground truth, role, ...)."""
    raw, _ = load_split(data_root, IN_DISTRIBUTION)
    annotations, _ = load_annotations(data_root)
    records = []
    for dialogue in load_dialogues(data_root, raw).dialogues:
        for sample in dialogue_samples(dialogue, annotations, raw.profiles):
            if sample.id in train_ids:
                records.append(sample.test_record())
    return records


def reviewed_record(record: dict, kind: str, image: DemoImage, rng: random.Random) -> dict:
    answer, defects = candidate(kind, record, image, rng)
    out = json.loads(json.dumps(record))
    out["conversations"][1]["answer"] = answer
    out["rm_review"] = {}
    for metric in METRIC_NAMES:
        score_a, score_b = scores(defects, metric)
        out["rm_review"][metric] = {"review": review_text(defects, metric),
                                    "score": [float(score_a), float(score_b)]}
    return out


def write_reviews(data_root, train_file, output_dir, *, samples: int = 40, seed: int = 0) -> Dict[str, int]:
    """Review `samples` training samples (spread over the dialogue types); one file per type. Returns counts."""
    data_root, output_dir = Path(data_root), Path(output_dir)
    train_ids = {s["id"] for s in json.loads(Path(train_file).read_text(encoding="utf-8"))}
    manifest = read_manifest(data_root)["images"]
    records = training_records(data_root, train_ids)
    rng = random.Random(seed)
    chosen = rng.sample(records, min(samples, len(records)))
    by_type: Dict[str, List[dict]] = {}
    counts: Dict[str, int] = {}
    for index, record in enumerate(chosen):
        kind = VARIANTS[index % len(VARIANTS)]
        info = manifest[record["image"]]
        image = DemoImage(record["image"], info["colour"], info["shape"])
        dialogue_type = _dialogue_type(record["id"])
        by_type.setdefault(dialogue_type, []).append(reviewed_record(record, kind, image, rng))
        counts[kind] = counts.get(kind, 0) + 1
    output_dir.mkdir(parents=True, exist_ok=True)
    for dialogue_type, reviewed in by_type.items():
        path = output_dir / f"{dialogue_type}_reviews.json"
        atomic_write_json(path, reviewed, final_newline=False)
    return counts


def _dialogue_type(sample_id: str) -> str:
    for marker, name in (("_comment_", "comment"), ("_human-role-dialogue_", "human-role"),
                         ("_role-role-dialogue_", "inter-role")):
        if marker in sample_id:
            return name
    raise ValueError(f"{sample_id!r} is not a dialogue sample id")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ArgumentParser(prog="python -m mmrole.demo.judge", description=__doc__)
    parser.add_argument("--data_root", required=True, help="the demo dataset (python -m mmrole.demo.data)")
    parser.add_argument("--train_file", required=True, help="train.json of data_prep/build_data.py on it")
    parser.add_argument("--output_dir", required=True, help="review files go here (the folder name = the reviewer)")
    parser.add_argument("--samples", type=int, default=40, help="training samples to review, 8 reviews each (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="which samples and candidates (default 0)")
    args = parser.parse_args(argv)
    try:
        counts = write_reviews(args.data_root, args.train_file, args.output_dir, samples=args.samples, seed=args.seed)
    except OSError as e:  # the dataset or train file cannot be read, or a write failed
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    except (ValueError, KeyError) as e:  # not the demo's dataset, or bad settings
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    total = sum(counts.values())
    print(f"templated judge: {total} samples x {len(METRIC_NAMES)} metrics reviewed -> {args.output_dir} "
          f"(candidates: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
