"""Results of MMRole-Eval: per-file result CSVs (RM_result) and the paper's Table 5 (report).

Per reviews file, RM_result writes `count,<eight metric names>` and one row: the number of
reviewed samples and, per metric, the mean ratio evaluated / ground truth (`metrics.mean_ratios`),
byte-identical to the published CSVs (csv module defaults: CRLF, floats as repr).

A result never passes for complete when it is not: a file with reviews that are missing or failed
(no review, no score pair, a score outside 0..10, a duplicate sample id; not the original's deliberate
skip of empty answers) gets one more column, `missing_reviews` (how many sample x metric reviews are
not in the means), and Table 5 rows built from such files (or from scores that are nan) carry an
`incomplete` column naming them. Complete files keep the published format exactly.

Table 5 combines the per-file CSVs of a model. Measured on the published CSVs (see
tests/test_eval_report.py), the paper's numbers are reproduced in every cell by
`paper` aggregation: a split's score is the plain mean of its three dialogue-type files, and the
combined row weighs In-Test 3 : Out-Test 1 (as if each of the six files held 72 resp. 24 samples).
The mean over all reviewed samples (`samples`) misses 24 of the 72 published cells after rounding,
by up to 0.00126.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..common.metrics import ABBR_OF, METRIC_ABBRS, METRIC_NAMES, mean_ratios, overall, weighted_mean
from ..common.problems import Problem
from ..common.store import PathLike, atomic_write_text
from .files import SchemaError, input_files, read_reviews

Scores = Dict[str, float]  # metric name -> mean ratio

SPLITS = ("in", "out")
SPLIT_LABELS = {"in": "In-Test", "out": "Out-Test"}
# The paper's combined row weighs In-Test three times Out-Test (found by fitting, see module doc).
PAPER_SPLIT_WEIGHTS = {"in": 3.0, "out": 1.0}
AGGREGATIONS = ("paper", "samples")


# --- RM_result: one reviews file -> one CSV ------------------------------------------------------


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


def score_reviews_file(path: PathLike, *, strict: bool = False) -> FileResult:
    """The result row of one reviews file.

    Default (the original): samples without a review (e.g. empty answers) are left out of
    `count` and of every mean; a metric without a valid score leaves the sample out of that
    metric's mean only. strict: every sample counts, and each missing or failed review
    contributes a ratio of 0. Either way every such sample is listed in `problems`.
    """
    samples, problems = read_reviews(path)
    per_sample = []
    for sample in samples:
        if not sample.reviewed and not strict:
            continue
        # (0, 1) is the ratio 0: the strict policy's penalty for a review that does not exist.
        per_sample.append({m: (pair if pair is not None else ((0.0, 1.0) if strict else None))
                           for m, pair in sample.scores.items()})
    count, scores = mean_ratios(per_sample)
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


# --- Table 5 ------------------------------------------------------------------------------------


class NoResults(SchemaError):
    """A model named for Table 5 has no result CSVs at all (a usage error, not a damaged file)."""


@dataclass(frozen=True)
class TableRow:
    label: str
    scores: Scores
    incomplete: Tuple[str, ...] = ()  # "<split>/<file>: what is missing" for each incomplete file behind the row

    @property
    def overall(self) -> float:
        return overall(self.scores)


def read_split(eval_dir: PathLike, split: str, model: str) -> List[FileResult]:
    """The per-file results of one model on one split (`DIR/<split>-test_results/<model>/*.csv`)."""
    folder = Path(eval_dir) / f"{split}-test_results" / model
    if not folder.is_dir():
        return []
    return [read_result_csv(path) for path in sorted(folder.glob("*.csv"))]


def _plain_mean(files: Sequence[FileResult]) -> Scores:
    return {name: sum(f.scores[name] for f in files) / len(files) for name in METRIC_NAMES}


def split_scores(files: Sequence[FileResult], aggregation: str) -> Scores:
    """One split's scores from its per-file results."""
    if aggregation == "paper":
        return _plain_mean(files)
    if aggregation == "samples":
        return weighted_mean([(f.count, f.scores) for f in files])
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")


def combined_scores(by_split: Mapping[str, Sequence[FileResult]], aggregation: str) -> Scores:
    """All test samples of a model: the splits combined as the chosen aggregation says."""
    present = {split: files for split, files in by_split.items() if files}
    if aggregation == "samples":
        return weighted_mean([(f.count, f.scores) for files in present.values() for f in files])
    means = {split: split_scores(files, aggregation) for split, files in present.items()}
    total = sum(PAPER_SPLIT_WEIGHTS[split] for split in means)
    return {
        name: sum(PAPER_SPLIT_WEIGHTS[split] * scores[name] for split, scores in means.items()) / total
        for name in METRIC_NAMES
    }


def _incomplete_files(by_split: Mapping[str, Sequence[FileResult]]) -> Tuple[str, ...]:
    return tuple(f"{split}/{f.name}: {f.incompleteness()}" for split, files in by_split.items() for f in files
                 if not f.complete)


def table5_rows(eval_dir: PathLike, models: Iterable[str], aggregation: str = "paper") -> List[TableRow]:
    """Per model: the row over all test samples, then `(In-Test)` and `(Out-Test)` rows when the
    model has results for both splits. NoResults when a model has no results at all; SchemaError
    naming a CSV that cannot be read. Rows from incomplete files name them (TableRow.incomplete)."""
    rows = []
    for model in models:
        by_split = {split: read_split(eval_dir, split, model) for split in SPLITS}
        if not any(by_split.values()):
            raise NoResults(eval_dir, f"no result CSVs for model {model!r} in {{in,out}}-test_results/{model}/")
        rows.append(TableRow(model, combined_scores(by_split, aggregation), _incomplete_files(by_split)))
        if all(by_split.values()):
            for split in SPLITS:
                rows.append(TableRow(f"{model} ({SPLIT_LABELS[split]})", split_scores(by_split[split], aggregation),
                                     _incomplete_files({split: by_split[split]})))
    return rows


TABLE_COLUMNS = ("model", *METRIC_ABBRS, "Overall")
INCOMPLETE_COLUMN = "incomplete"  # only in tables holding a row built from incomplete results


def row_is_incomplete(row: TableRow) -> bool:
    return bool(row.incomplete) or any(math.isnan(v) for v in row.scores.values())


def _incomplete_cell(row: TableRow) -> str:
    if row.incomplete:
        return f"{len(row.incomplete)} incomplete file(s): " + "; ".join(row.incomplete)
    return "no score for some metric (nan)" if row_is_incomplete(row) else ""


def _columns(rows: Sequence[TableRow]) -> Tuple[str, ...]:
    return TABLE_COLUMNS + ((INCOMPLETE_COLUMN,) if any(map(row_is_incomplete, rows)) else ())


def _cells(row: TableRow, decimals: int, columns: Sequence[str] = TABLE_COLUMNS) -> List[str]:
    values = [row.scores[name] for name in METRIC_NAMES] + [row.overall]
    cells = [row.label] + [f"{v:.{decimals}f}" if not math.isnan(v) else "nan" for v in values]
    return cells + ([_incomplete_cell(row)] if INCOMPLETE_COLUMN in columns else [])


def table_csv_text(rows: Sequence[TableRow], decimals: int = 3) -> str:
    """Table 5 as CSV in the layout of the published table5.csv (plus the `incomplete` column when a row
    is built from incomplete results)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = _columns(rows)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(_cells(row, decimals, columns))
    return buffer.getvalue()


def table_markdown_text(rows: Sequence[TableRow], decimals: int = 3) -> str:
    columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" + "---:|" * len(TABLE_COLUMNS[1:])
             + ("---|" if len(columns) > len(TABLE_COLUMNS) else "")]
    lines += ["| " + " | ".join(_cells(row, decimals, columns)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def read_table_csv(path: PathLike) -> Dict[str, Scores]:
    """A Table 5 CSV (ours or the published one) as {row label: {metric name or Overall: value}}."""
    table = {}
    with Path(path).open(encoding="utf-8", newline="") as f:
        for record in csv.DictReader(f):
            scores = {name: float(record[ABBR_OF[name]]) for name in METRIC_NAMES}
            scores["Overall"] = float(record["Overall"])
            table[record["model"]] = scores
    return table


def write_report(
    eval_dir: PathLike, models: Sequence[str], output_dir: PathLike, *, aggregation: str = "paper", decimals: int = 3
) -> List[TableRow]:
    """table5.csv, table5.md, radar.png and dimensions.png for the given models."""
    from .charts import dimension_bar_chart, radar_chart  # matplotlib only when charts are drawn

    rows = table5_rows(eval_dir, models, aggregation)
    output_dir = Path(output_dir)
    atomic_write_text(output_dir / "table5.csv", table_csv_text(rows, decimals))
    atomic_write_text(output_dir / "table5.md", table_markdown_text(rows, decimals))
    # The charts' legends say it too: "<model> (incomplete)".
    overall_rows = [replace(row, label=f"{row.label} (incomplete)") if row_is_incomplete(row) else row
                     for row in rows if row.label in models]
    radar_chart(overall_rows, output_dir / "radar.png")
    dimension_bar_chart(overall_rows, output_dir / "dimensions.png")
    return rows
