"""Results of MMRole-Eval: per-file result CSVs (RM_result).

Per reviews file, RM_result writes `count,<eight metric names>` and one row: the number of
reviewed samples and, per metric, the mean ratio evaluated / ground truth (`metrics.mean_ratios`),
byte-identical to the published CSVs (csv module defaults: CRLF, floats as repr).

A result never passes for complete when it is not: a file with reviews that are missing or failed
(no review, no score pair, a score outside 0..10, a duplicate sample id; not the original's deliberate
skip of empty answers) gets one more column, `missing_reviews` (how many sample x metric reviews are
not in the means). Complete files keep the published format exactly. Table 5 is built from these CSVs
(mmrole.eval.report).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from ..common.metrics import METRIC_NAMES, mean_ratios
from ..common.problems import Problem
from ..common.store import PathLike, atomic_write_text
from .files import ReviewedSample, SchemaError, ScorePair, input_files, read_reviews

Scores = Dict[str, float]  # metric name -> mean ratio



MISSING_COLUMN = "missing_reviews"  # present only in the CSV of an incomplete file


@dataclass
class FileResult:
    count: int
    scores: Scores
    problems: List[Problem] = field(default_factory=list)
    name: str = ""
    missing_reviews: int = 0  # sample x metric reviews not in the means (deliberate skips aside)

    @property
    def complete(self) -> bool:
        return self.missing_reviews == 0 and all(not math.isnan(value) for value in self.scores.values())

    def incompleteness(self) -> str:
        """What is missing, for messages ("" when complete)."""
        if self.missing_reviews:
            return f"{self.missing_reviews} review(s) missing or failed"
        return "" if self.complete else "no score for some metric (nan)"


def scored_samples(samples: Iterable[ReviewedSample], *, strict: bool = False
                   ) -> List[Tuple[str, Dict[str, Optional[ScorePair]]]]:
    """(sample id, {metric: score pair or None}) of every sample that counts in a file's result, in file order:
    the reviewed samples (default, as the original), or every sample with each missing or failed review as the
    ratio 0 (strict). The one place that says which samples and pairs a result is made of (the CSVs here, the
    per-sample statistics in mmrole.eval.sample_scores)."""
    counted = []
    for sample in samples:
        if not sample.reviewed and not strict:
            continue
        # (0, 1) is the ratio 0: the strict policy's penalty for a review that does not exist.
        counted.append((sample.id, {m: (pair if pair is not None else ((0.0, 1.0) if strict else None))
                                    for m, pair in sample.scores.items()}))
    return counted


def score_reviews_file(path: PathLike, *, strict: bool = False) -> FileResult:
    """The result row of one reviews file.

    Default (the original): samples without a review (e.g. empty answers) are left out of
    `count` and of every mean; a metric without a valid score leaves the sample out of that
    metric's mean only. strict: every sample counts, and each missing or failed review
    contributes a ratio of 0. Either way every such sample is listed in `problems`.
    """
    samples, problems = read_reviews(path)
    count, scores = mean_ratios(pairs for _, pairs in scored_samples(samples, strict=strict))
    # A whole record without its reviews misses all eight; a failed review one.
    missing = sum(1 if p.metric else len(METRIC_NAMES) for p in problems if not p.deliberate)
    return FileResult(count, scores, problems, name=Path(path).stem, missing_reviews=missing)


def result_csv_text(count: int, scores: Mapping[str, float], missing_reviews: int = 0) -> str:
    """The published CSV format: csv module defaults (CRLF), floats as Python repr; an incomplete
    file's CSV has the `missing_reviews` column too."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    extra = [MISSING_COLUMN] if missing_reviews else []
    writer.writerow(["count", *METRIC_NAMES, *extra])
    writer.writerow([count, *(scores[name] for name in METRIC_NAMES), *([missing_reviews] if extra else [])])
    return buffer.getvalue()


def read_result_csv(path: PathLike) -> FileResult:
    """A per-file result CSV back as (count, scores); SchemaError naming the file when malformed."""
    path = Path(path)
    try:
        rows = list(csv.reader(path.open(encoding="utf-8", newline="")))
    except OSError as e:
        raise SchemaError(path, f"cannot read: {e}") from None
    header = ["count", *METRIC_NAMES]
    if len(rows) != 2 or rows[0] not in (header, header + [MISSING_COLUMN]) or len(rows[1]) != len(rows[0]):
        raise SchemaError(path, f"expected the header `count,{','.join(METRIC_NAMES)}[,{MISSING_COLUMN}]` and one row")
    try:
        count = int(rows[1][0])
        scores = {name: float(value) for name, value in zip(METRIC_NAMES, rows[1][1:])}
        missing = int(rows[1][len(header)]) if len(rows[0]) > len(header) else 0
    except ValueError as e:
        raise SchemaError(path, f"not a number: {e}") from None
    return FileResult(count, scores, name=path.stem, missing_reviews=missing)


def write_result_csvs(
    input_dir: PathLike, output_dir: PathLike, input_file: Optional[str] = None, *, strict: bool = False
) -> Tuple[List[FileResult], List[Problem]]:
    """RM_result over a directory of reviews files: one CSV per file, named like it. A file that
    cannot be read is reported (second list) and gets no CSV; the other files go on."""
    results, unusable = [], []
    for path in input_files(input_dir, input_file):
        try:
            result = score_reviews_file(path, strict=strict)
        except SchemaError as e:
            unusable.append(e.problem())
            continue
        atomic_write_text(Path(output_dir) / (path.stem + ".csv"),
                          result_csv_text(result.count, result.scores, result.missing_reviews))
        results.append(result)
    return results, unusable
