"""The paper's Table 5 from per-file result CSVs (eval/report.py), and its charts (charts.py).

Table 5 combines the per-file CSVs of a model (mmrole.eval.results). Measured on the published CSVs (see
tests/eval/test_report.py), the paper's numbers are reproduced in every cell by `paper` aggregation: a split's
score is the plain mean of its three dialogue-type files, and the combined row weighs In-Test 3 : Out-Test 1 (as
if each of the six files held 72 resp. 24 samples). The mean over all reviewed samples (`samples`) misses 24 of
the 72 published cells after rounding, by up to 0.00126.

Rows built from incomplete files (a CSV with `missing_reviews`, or scores that are nan) carry an `incomplete`
column naming them, and the charts' legends say "(incomplete)".
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

from ..common.metrics import ABBR_OF, METRIC_ABBRS, METRIC_NAMES, overall, weighted_mean
from ..common.store import PathLike, atomic_write_text
from .files import SchemaError
from .results import FileResult, Scores, read_result_csv

SPLITS = ("in", "out")
SPLIT_LABELS = {"in": "In-Test", "out": "Out-Test"}
# The paper's combined row weighs In-Test three times Out-Test (found by fitting, see module doc).
PAPER_SPLIT_WEIGHTS = {"in": 3.0, "out": 1.0}
AGGREGATIONS = ("paper", "samples")


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
