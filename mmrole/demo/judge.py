"""The demo's stand-in for the GPT-4 judge: a rule-based judge that reviews any answer to a demo sample, in the
reviews-file schema, so that it can (1) make the reward model's training data from candidate answers to training
samples (as the paper did with GPT-4) and (2) review the agents' test answers, to measure how well the trained
reward model agrees with it on answers it never saw (eval/RM_agreement.py).

    python -m mmrole.demo.judge --data_root demo_output/MMRole-Data --train_file demo_output/data/train/train.json \\
        --output_dir demo_output/judge_reviews/demo-rule-judge [--samples 48] [--seed 0]
    python -m mmrole.demo.judge --data_root demo_output/MMRole-Data --answers_dir eval/in-test_answers/demo-agent \\
        --output_dir eval/in-test_rule_reviews/demo-agent

The rules. The judge knows each sample's character (the `role`), its image's dominant colour and shape (the
dataset's demo_manifest.json) and the ground truth (Model B). It finds these defects in an answer (Model A):

    no_catchphrase    it does not open with the character's catchphrase (every ground-truth reply does)
    wrong_character   it holds another character's catchphrase
    assistant_style   it speaks as an AI assistant
    wrong_colour      it names a colour that is neither the image's nor one the ground truth names
    off_topic         the ground truth talks about the image (its colour or shape) and the answer does not
    repetitive        a sentence comes twice or more
    word_salad        fewer than FLUENT_SHARE of its word pairs (English words, Chinese characters) occur anywhere
                      in the dataset's dialogues (the judge's whole "language model")
    empty             there is no answer at all

Per metric, Model B (the ground truth) scores 9 and Model A 9 minus the PENALTIES of its defects for that metric
(at least 1; an empty answer 1 everywhere). Each review names the worst defect for the metric (or says both are
fine) and ends with the judge format `[Scores]: (A, B)`.

Candidate answers for the reward model's training data are made from each chosen training sample, cycling
through CANDIDATES: the ground truth itself, a scripted reply in other words (mmrole.demo.scripted: no defect, so
that "good" does not mean "identical to B"), and answers with one planted flaw each. They are judged by the same
rules as every other answer.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple

from ..common.cli import EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser
from ..common.metrics import METRIC_NAMES
from ..common.store import atomic_write_json
from ..data.raw import IN_DISTRIBUTION, load_annotations, load_dialogues, load_split
from ..data.samples import dialogue_samples
from ..eval.files import input_files, load_json_list
from .data import (CHARACTERS, COLOURS, DemoCharacter, DemoImage, character, colour_word, join_sentences,
                   read_manifest, remark, shape_word)

JUDGE_SCORE_B = 9
FLUENT_SHARE = 0.35
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
    "empty": {metric: JUDGE_SCORE_B for metric in METRIC_NAMES},
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
    "empty": "says nothing",
}
ASSISTANT_MARKERS = ("ai assistant", "as an ai", "ai助手", "作为一个ai")
CANDIDATES = ("faithful", "scripted", "no_catchphrase", "wrong_colour", "word_salad", "scripted", "other_character",
              "assistant", "off_topic", "repetitive", "loop")
WORD = re.compile(r"[a-z']+|[\u4e00-\u9fff]")
SENTENCE_END = re.compile(r"[.!?。！？]+")


def words(text: str) -> List[str]:
    """English words (lower case) and Chinese characters, in order."""
    return WORD.findall(text.lower())


def word_pairs(text: str) -> List[Tuple[str, str]]:
    tokens = words(text)
    return list(zip(tokens, tokens[1:]))


def _colours_named(text: str) -> Set[str]:
    lowered = text.lower()
    return {key for key, (_, english, chinese) in COLOURS.items()
            if re.search(rf"\b{english}\b", lowered) or chinese in text}


def _names_image(text: str, image: DemoImage, language: str) -> bool:
    lowered = text.lower()
    return colour_word(image.colour, language).lower() in lowered or shape_word(image.shape, language) in lowered


def _dataset_texts(data_root: Path) -> Iterable[str]:
    for path in sorted((data_root / "dialogues").rglob("*.json")):
        for record in load_json_list(path):
            for turn in record.get("conversations", []) if isinstance(record, dict) else ():
                if isinstance(turn, dict) and isinstance(turn.get("value"), str):
                    yield turn["value"]


class RuleJudge:
    """The rules above, over one demo dataset (its manifest and its dialogues)."""

    def __init__(self, data_root):
        data_root = Path(data_root)
        self.images = {path: DemoImage(path, info["colour"], info["shape"])
                       for path, info in read_manifest(data_root)["images"].items()}
        self.fluent_pairs: FrozenSet[Tuple[str, str]] = frozenset(
            pair for text in _dataset_texts(data_root) for pair in word_pairs(text))

    def facts(self, record: dict) -> Tuple[DemoCharacter, DemoImage]:
        """The sample's character and image; ValueError naming what is unknown (not a demo sample)."""
        role = character(record.get("role", ""))
        if role is None:
            raise ValueError(f"sample {record.get('id')}: {record.get('role')!r} is not a character of the demo data")
        image = self.images.get(record.get("image", ""))
        if image is None:
            raise ValueError(f"sample {record.get('id')}: image {record.get('image')!r} is not in the demo manifest")
        return role, image

    def defects(self, record: dict, answer: str) -> Tuple[str, ...]:
        role, image = self.facts(record)
        truth = record["conversations"][1]["value"]
        if not answer.strip():
            return ("empty",)
        found = []
        if not answer.startswith(role.catchphrase):
            found.append("no_catchphrase")
        if any(c.catchphrase in answer for c in CHARACTERS if c.name != role.name):
            found.append("wrong_character")
        if any(marker in answer.lower() for marker in ASSISTANT_MARKERS):
            found.append("assistant_style")
        if _colours_named(answer) - _colours_named(truth) - {image.colour}:
            found.append("wrong_colour")
        if _names_image(truth, image, role.language) and not _names_image(answer, image, role.language):
            found.append("off_topic")
        sentences = [s.strip() for s in SENTENCE_END.split(answer) if s.strip()]
        if len(sentences) != len(set(sentences)):
            found.append("repetitive")
        pairs = word_pairs(answer)
        if pairs and sum(pair in self.fluent_pairs for pair in pairs) < FLUENT_SHARE * len(pairs):
            found.append("word_salad")
        return tuple(found)

    def review(self, record: dict, answer: str) -> Dict[str, dict]:
        """`rm_review` of an answer: per metric the review text and its score pair."""
        defects = self.defects(record, answer)
        return {metric: {"review": review_text(defects, metric), "score": [float(s) for s in scores(defects, metric)]}
                for metric in METRIC_NAMES}


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


# --- candidate answers (the reward model's training data) ----------------------------------------


def candidate(kind: str, record: dict, image: DemoImage, rng: random.Random) -> str:
    """An answer of one kind for a sample (the ground truth when the kind does not apply to it)."""
    from .scripted import scripted_reply

    truth = record["conversations"][1]["value"]
    role = character(record["role"])
    language = role.language
    colour, shape = colour_word(image.colour, language), shape_word(image.shape, language)
    if kind == "scripted":
        return scripted_reply(role, image, rng)
    if kind == "no_catchphrase" and truth.startswith(role.catchphrase):
        return truth[len(role.catchphrase):].strip()
    if kind == "wrong_colour" and colour in truth:
        wrong = rng.choice([c for c in COLOURS if c != image.colour])
        return truth.replace(colour, colour_word(wrong, language))
    others = [c for c in CHARACTERS if c.language == language and c.name not in (role.name, record["other_role"])]
    if kind == "other_character":
        other = rng.choice(others)
        return join_sentences(other, other.catchphrase, remark(other, image, rng))
    if kind == "assistant":
        return (f"作为一个AI助手，我可以告诉你图片里有一个{colour}的{shape}。" if language == "Chinese"
                else f"As an AI assistant, I can tell you that the image shows a {colour} {shape}.")
    if kind == "word_salad":
        pieces = list(truth) if language == "Chinese" else truth.split()
        rng.shuffle(pieces)
        return ("" if language == "Chinese" else " ").join(pieces)
    if kind == "repetitive":
        return join_sentences(role, *[role.catchphrase] * 4)
    if kind == "off_topic":
        return join_sentences(role, role.catchphrase, "我今天只想聊聊天气。" if language == "Chinese"
                              else "I would rather talk about the weather today.")
    if kind == "loop":  # what a barely trained language model says: one phrase, over and over
        other = rng.choice(others)
        phrase = "我看到了一个灯笼！" if language == "Chinese" else "I see a lantern!"
        return join_sentences(other, other.catchphrase, *[phrase] * rng.randint(3, 6))
    return truth


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


def reviewed_record(judge: RuleJudge, record: dict, answer: str) -> dict:
    out = json.loads(json.dumps(record))
    out["conversations"][1]["answer"] = answer
    out["rm_review"] = judge.review(record, answer)
    return out


def write_reviews(data_root, train_file, output_dir, *, samples: int = 48, seed: int = 0) -> Dict[str, int]:
    """Review `samples` training samples (spread over the dialogue types), one candidate each; one file per type.
    Returns how many candidates of each kind."""
    data_root, output_dir = Path(data_root), Path(output_dir)
    judge = RuleJudge(data_root)
    train_ids = {s["id"] for s in json.loads(Path(train_file).read_text(encoding="utf-8"))}
    records = training_records(data_root, train_ids)
    rng = random.Random(seed)
    chosen = rng.sample(records, min(samples, len(records)))
    by_type: Dict[str, List[dict]] = {}
    counts: Dict[str, int] = {}
    for index, record in enumerate(chosen):
        kind = CANDIDATES[index % len(CANDIDATES)]
        _, image = judge.facts(record)
        answer = candidate(kind, record, image, rng)
        by_type.setdefault(_dialogue_type(record["id"]), []).append(reviewed_record(judge, record, answer))
        counts[kind] = counts.get(kind, 0) + 1
    output_dir.mkdir(parents=True, exist_ok=True)
    for dialogue_type, reviewed in by_type.items():
        atomic_write_json(output_dir / f"{dialogue_type}_reviews.json", reviewed, final_newline=False)
    return counts


def review_answers(data_root, answers_dir, output_dir) -> Tuple[int, int]:
    """Review every answers file of a folder into OUTPUT_DIR/<same name> (the RM_review schema). Records without an
    answer are copied without a review. Returns (answers reviewed, records without an answer)."""
    judge = RuleJudge(data_root)
    reviewed = unanswered = 0
    for path in input_files(answers_dir, None):
        out = []
        for record in load_json_list(path):
            answer = record["conversations"][1].get("answer")
            if isinstance(answer, str):
                out.append(reviewed_record(judge, record, answer))
                reviewed += 1
            else:
                out.append(record)
                unanswered += 1
        atomic_write_json(Path(output_dir) / path.name, out, final_newline=False)
    return reviewed, unanswered


def _dialogue_type(sample_id: str) -> str:
    for marker, name in (("_comment_", "comment"), ("_human-role-dialogue_", "human-role"),
                         ("_role-role-dialogue_", "inter-role")):
        if marker in sample_id:
            return name
    raise ValueError(f"{sample_id!r} is not a dialogue sample id")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ArgumentParser(prog="python -m mmrole.demo.judge", description=__doc__)
    parser.add_argument("--data_root", required=True, help="the demo dataset (python -m mmrole.demo.data)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--train_file", help="train.json of data_prep/build_data.py: review candidate answers to it")
    source.add_argument("--answers_dir", help="a folder of answers files (inference.py's output): review them")
    parser.add_argument("--output_dir", required=True, help="review files go here (the folder name = the reviewer)")
    parser.add_argument("--samples", type=int, default=48,
                        help="with --train_file: training samples to review, 8 reviews each (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="with --train_file: which samples and candidates")
    args = parser.parse_args(argv)
    try:
        if args.train_file:
            counts = write_reviews(args.data_root, args.train_file, args.output_dir, samples=args.samples,
                                   seed=args.seed)
            print(f"rule judge: {sum(counts.values())} candidate answers x {len(METRIC_NAMES)} metrics reviewed -> "
                  f"{args.output_dir} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
        else:
            reviewed, unanswered = review_answers(args.data_root, args.answers_dir, args.output_dir)
            print(f"rule judge: {reviewed} answers x {len(METRIC_NAMES)} metrics reviewed -> {args.output_dir}"
                  + (f" ({unanswered} records without an answer copied unreviewed)" if unanswered else ""))
    except OSError as e:  # the dataset or an input cannot be read, or a write failed
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    except (ValueError, KeyError) as e:  # not the demo's dataset, or bad settings
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
