"""MMRole-Eval review: eight judge requests per sample, parsed scores, resumable.

For every usable sample of an answers file and every metric, the judge (the reward model or a
GPT-class model, through any Backend) gets the evaluator system prompt, the sample's image and
the protocol prompt (`prompts.judge_prompt`: A = the evaluated answer, B = the ground truth). Its
review is parsed with `metrics.parse_score_pair`. Output: the answers file with
`rm_review[metric] = {review, score}` per reviewed sample (score `{}` when the review could not be
parsed, as the original wrote it) — the published reviews schema.

Beyond the original:
- parse_retries: a review without a score pair (or whose pair lies outside metrics.SCORE_RANGE,
  e.g. (85, 8)) is asked again with sampling (a fixed seed per attempt) up to N times; after that
  it stays a failure, reported, never a score. 0 = the original (one ask per metric).
- empty_answer: "skip" (the original: an empty answer is not sent to the judge, the sample gets
  no rm_review and is listed) or "judge" (sent like any other answer, so it is scored).
- swap: every metric is also asked with the two answers swapped (A = ground truth) into
  `rm_review_swapped`; the position bias is reported.
- A journal keyed by (sample id, metric, order) makes a rerun resume; an API error is reported,
  and retried by the next run. Journal results count only for the judge, generation settings and
  prompt that made them (mmrole.eval.run.ResultJournal): a changed answer is reviewed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..backends.base import DEFAULT_SEED, Backend, BackendError, ChatRequest, ChatResult, GenerationParams
from ..common.metrics import METRIC_NAMES, parse_score_pair, score_pair_problem, score_ratio
from ..common.problems import Problem
from ..common.prompts import EVALUATOR_SYSTEM, judge_prompt
from ..common.store import PathLike, atomic_write_json, atomic_write_text
from .agreement import winner
from .files import (REVIEW_KEY, SWAPPED_REVIEW_KEY, SchemaError, TestSample, image_problems, load_json_list,
                    load_test_samples)
from .run import ERROR_STATUS, FileSummary, ResultJournal, already_finished, open_result_journal, run_requests, seeded

NORMAL, SWAPPED = "AB", "BA"  # AB: A = evaluated answer, B = ground truth (the protocol's order)
EMPTY_ANSWER_POLICIES = ("skip", "judge")
OK, UNPARSED, ERROR = "ok", "unparsed", ERROR_STATUS


@dataclass(frozen=True)
class ReviewConfig:
    image_dir: str
    params: GenerationParams = GenerationParams()
    parse_retries: int = 0
    retry_seed: int = DEFAULT_SEED
    empty_answer: str = "skip"
    swap: bool = False
    metrics: Tuple[str, ...] = METRIC_NAMES
    progress: bool = True
    redo_stale: bool = False  # redo journal results of other settings instead of refusing the file

    def __post_init__(self):
        if self.empty_answer not in EMPTY_ANSWER_POLICIES:
            raise ValueError(f"empty_answer must be one of {EMPTY_ANSWER_POLICIES}, not {self.empty_answer!r}")
        if self.parse_retries < 0:
            raise ValueError("parse_retries must be >= 0")

    @property
    def orders(self) -> Tuple[str, ...]:
        return (NORMAL, SWAPPED) if self.swap else (NORMAL,)

    def params_for_attempt(self, attempt: int) -> GenerationParams:
        """Attempt 0 as asked (greedy with --no_random); retries sample, seeded per attempt."""
        return self.params if attempt == 0 else seeded(self.params, self.retry_seed + attempt)


def review_request(sample: TestSample, metric: str, order: str, image_dir: PathLike) -> ChatRequest:
    """The judge request of one sample, metric and answer order; key = (id, metric, order)."""
    answer_a, answer_b = (sample.answer, sample.ground_truth) if order == NORMAL else (sample.ground_truth, sample.answer)
    text = judge_prompt(
        question=sample.question,
        answer_a=answer_a or "",
        answer_b=answer_b or "",
        role=sample.role,
        script=sample.script,
        other_role=sample.other_role,
        metric=metric,
    )
    return ChatRequest.single(text, image=sample.image_path(image_dir), system=EVALUATOR_SYSTEM,
                              key=(sample.id, metric, order))


# --- one file ------------------------------------------------------------------------------------


class _FileReview:
    """Reviews one answers file into one reviews file, through its journal."""

    def __init__(self, input_path: Path, output_path: Path, backend: Backend, config: ReviewConfig):
        self.input_path, self.output_path = input_path, output_path
        self.backend, self.config = backend, config
        self.summary = FileSummary(str(input_path), str(output_path))
        self.journal: Optional[ResultJournal] = None
        self.samples: List[TestSample] = []
        self.requests: Dict[Tuple[str, str, str], ChatRequest] = {}

    def _usable_samples(self) -> List[TestSample]:
        samples, problems = load_test_samples(self.input_path, need_answer=True)
        self.summary.samples = len(load_json_list(self.input_path))
        self.summary.skipped += problems
        kept = []
        for sample in samples:
            # The original tests `if evaluated_answer:`, so only "" counts as empty.
            if sample.answer == "" and self.config.empty_answer == "skip":
                self.summary.skipped.append(Problem(str(self.input_path), sample.id,
                                                    "empty answer: not reviewed (as the original)", deliberate=True))
            else:
                kept.append(sample)
        kept, unusable_images = image_problems(kept, self.config.image_dir, self.input_path)
        self.summary.skipped += unusable_images
        return kept

    def _pending(self, retried_errors: set) -> Dict[int, List[ChatRequest]]:
        """Requests still to ask, grouped by attempt number."""
        groups: Dict[int, List[ChatRequest]] = {}
        for key, request in self.requests.items():  # sample by sample, metric by metric, as built
            record = self.journal.get(key)
            if record is None or (record["status"] == ERROR and key not in retried_errors):
                attempt = 0 if record is None else record["attempts"]
            elif record["status"] == UNPARSED and record["attempts"] <= self.config.parse_retries:
                attempt = record["attempts"]
            else:
                continue
            groups.setdefault(attempt, []).append(request)
        return groups

    def _record(self, request: ChatRequest, result: Union[ChatResult, BackendError], attempt: int) -> None:
        sample_id, metric, order = request.key
        previous = self.journal.get(request.key) or {}
        record = {"id": sample_id, "metric": metric, "order": order}
        if isinstance(result, BackendError):
            # Keep an earlier unparsed review (if any); the next run asks again.
            record.update(review=previous.get("review"), score=None, attempts=attempt,
                          status=ERROR, error=str(result))
        else:
            pair = parse_score_pair(result.text)
            invalid = score_pair_problem(pair) if pair else None  # e.g. (85, 8): not a score, asked again
            record.update(review=result.text, score=list(pair) if pair and not invalid else None,
                          attempts=attempt + 1, status=OK if pair and not invalid else UNPARSED,
                          finish_reason=result.finish_reason)
            if invalid:
                record["invalid"] = invalid
        self.journal.append(record)

    def run(self) -> FileSummary:
        if already_finished(self.output_path):
            self.summary.notes.append("output exists without a journal: already finished, left as is "
                                      "(delete it to review again)")
            return self.summary
        try:
            self.samples = self._usable_samples()
        except SchemaError as e:  # unreadable or malformed file: reported, the other files go on
            self.summary.skipped.append(e.problem())
            return self.summary
        self.requests = {(sample.id, metric, order): review_request(sample, metric, order, self.config.image_dir)
                         for sample in self.samples for metric in self.config.metrics for order in self.config.orders}
        self.journal = open_result_journal(self.output_path, ("id", "metric", "order"), self.backend,
                                           self.config.params, list(self.requests.values()), self.summary,
                                           self.config.redo_stale)
        if self.journal is None:
            return self.summary
        retried_errors: set = set()
        while True:
            groups = self._pending(retried_errors)
            if not groups:
                break
            attempt = min(groups)
            requests = groups[attempt]
            retried_errors.update(r.key for r in requests)  # an error is asked once per run
            desc = f"{self.input_path.name}" + (f" retry {attempt}" if attempt else "")
            run_requests(self.backend, requests, self.config.params_for_attempt(attempt),
                         lambda req, res: self._record(req, res, attempt), desc=desc, progress=self.config.progress)
        self._finish()
        return self.summary

    def _reviews_of(self, sample: TestSample, order: str) -> Dict[str, dict]:
        reviews = {}
        for metric in self.config.metrics:
            record = self.journal.get((sample.id, metric, order))
            if record is None or record.get("review") is None:
                continue
            reviews[metric] = {"review": record["review"], "score": record["score"] if record["score"] else {}}
        return reviews

    def _finish(self) -> None:
        at = {sample.index: sample for sample in self.samples}  # by position: duplicate ids get nothing
        output = []
        for index, record in enumerate(load_json_list(self.input_path)):
            sample = at.get(index)
            if sample is not None:
                record = dict(record)
                for order, field_name in ((NORMAL, REVIEW_KEY), (SWAPPED, SWAPPED_REVIEW_KEY)):
                    reviews = self._reviews_of(sample, order) if order in self.config.orders else {}
                    if reviews:
                        record[field_name] = reviews
            output.append(record)
        self._collect_failures()
        atomic_write_json(self.output_path, output, final_newline=False)
        if self.config.swap:
            bias = position_bias(self.journal.records(), self.config.metrics)
            atomic_write_text(self.output_path.with_suffix(".position_bias.csv"), position_bias_csv(bias))
            self.summary.notes.append("position bias (ratio evaluated/ground truth, A-first minus B-first):")
            self.summary.notes += [f"  {line}" for line in format_position_bias(bias).splitlines()]

    def _collect_failures(self) -> None:
        complete = 0
        for sample in self.samples:
            full = True
            for metric in self.config.metrics:
                for order in self.config.orders:
                    record = self.journal.get((sample.id, metric, order))
                    if record is None or record["status"] == OK:
                        full = full and record is not None
                        continue
                    full = False
                    what = f"API error: {record['error']}" if record["status"] == ERROR else (
                        f"{record['invalid']} in the review after {record['attempts']} ask(s)" if record.get("invalid")
                        else f"no score pair in the review after {record['attempts']} ask(s)")
                    label = metric if order == NORMAL else f"{metric}, swapped"
                    self.summary.failed.append(Problem(str(self.input_path), sample.id, what, metric=label))
            complete += full
        self.summary.done = complete


# --- position bias -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionBias:
    metric: str
    pairs: int  # samples with a parsed score in both orders
    ratio_a_first: float  # mean evaluated/ground-truth ratio when the evaluated answer is shown first
    ratio_b_first: float  # ... when it is shown second
    winner_flips: float  # share of samples whose winner changes with the order


def position_bias(records: Iterable[dict], metrics: Sequence[str] = METRIC_NAMES) -> List[PositionBias]:
    """Per metric, compare the normal and the swapped reviews of the same samples."""
    scores: Dict[Tuple[str, str], Dict[str, Tuple[float, float]]] = {}
    for record in records:
        if record.get("status") == OK:
            a, b = record["score"]
            # Swapped reviews score (ground truth, evaluated): turn them back to (evaluated, ground truth).
            pair = (a, b) if record["order"] == NORMAL else (b, a)
            scores.setdefault((record["id"], record["metric"]), {})[record["order"]] = pair
    rows = []
    for metric in metrics:
        both = [s for (sid, m), s in scores.items() if m == metric and len(s) == 2
                and score_ratio(s[NORMAL]) is not None and score_ratio(s[SWAPPED]) is not None]
        n = len(both)
        if n == 0:
            rows.append(PositionBias(metric, 0, float("nan"), float("nan"), float("nan")))
            continue
        rows.append(PositionBias(
            metric, n,
            sum(score_ratio(s[NORMAL]) for s in both) / n,
            sum(score_ratio(s[SWAPPED]) for s in both) / n,
            sum(winner(s[NORMAL]) != winner(s[SWAPPED]) for s in both) / n,
        ))
    return rows


def format_position_bias(rows: Sequence[PositionBias]) -> str:
    lines = [f"{'metric':26s} {'pairs':>5s} {'A first':>8s} {'B first':>8s} {'diff':>8s} {'flips':>6s}"]
    for r in rows:
        lines.append(f"{r.metric:26s} {r.pairs:5d} {r.ratio_a_first:8.4f} {r.ratio_b_first:8.4f} "
                     f"{r.ratio_a_first - r.ratio_b_first:+8.4f} {r.winner_flips:6.3f}")
    return "\n".join(lines)


def position_bias_csv(rows: Sequence[PositionBias]) -> str:
    lines = ["metric,pairs,ratio_evaluated_first,ratio_evaluated_second,difference,winner_flips"]
    for r in rows:
        lines.append(f"{r.metric},{r.pairs},{r.ratio_a_first!r},{r.ratio_b_first!r},"
                     f"{r.ratio_a_first - r.ratio_b_first!r},{r.winner_flips!r}")
    return "\n".join(lines) + "\n"


# --- many files ----------------------------------------------------------------------------------


def review_files(
    inputs: Sequence[Path], output_dir: PathLike, backend: Backend, config: ReviewConfig
) -> List[FileSummary]:
    """Review each answers file into OUTPUT_DIR/<same name>; one summary per file."""
    summaries = []
    for input_path in inputs:
        output_path = Path(output_dir) / input_path.name
        summaries.append(_FileReview(Path(input_path), output_path, backend, config).run())
    return summaries
