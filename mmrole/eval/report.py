"""The paper's Table 5 from per-file result CSVs (eval/report.py), with bootstrap intervals; charts in charts.py,
paired comparisons and the ranking in compare.py, the judge audit in audit.py.

Table 5 combines the per-file CSVs of a model (mmrole.eval.results). Measured on the published CSVs (see
tests/eval/test_report.py), the paper's numbers are reproduced in every cell by `paper` aggregation: a split's
score is the plain mean of its three dialogue-type files, and the combined row weighs In-Test 3 : Out-Test 1 (as
if each of the six files held 72 resp. 24 samples). The mean over all reviewed samples (`samples`) misses 24 of
the 72 published cells after rounding, by up to 0.00126.

The cells are the CSVs' numbers, always. Intervals are an addition: they come from the reviews files behind the
CSVs (mmrole.eval.sample_scores; a stratified bootstrap, mmrole.eval.stats). A row whose files have no reviews
beside them (the published Out-Test results) gets no interval, and `TableRow.interval_note` says why: an
interval that left out part of the row's samples would look narrower than it is.

Rows built from incomplete files (a CSV with `missing_reviews`, or scores that are nan) carry an `incomplete`
column naming them, and the charts' legends say "(incomplete)".
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..common.metrics import ABBR_OF, METRIC_ABBRS, METRIC_NAMES, overall, weighted_mean
from ..common.store import PathLike, atomic_write_json, atomic_write_text
from .files import SchemaError
from .results import FileResult, Scores, read_result_csv
from .sample_scores import (AGGREGATIONS, PAPER_SPLIT_WEIGHTS, SPLIT_LABELS, SPLITS, Stratum, aggregation_weights,
                            model_strata)
from .stats import COLUMNS, OVERALL, Interval, IntervalSettings, bootstrap_cells

__all__ = ["AGGREGATIONS", "PAPER_SPLIT_WEIGHTS", "SPLITS", "SPLIT_LABELS", "NoResults", "TableRow", "Table5",
           "table5", "table5_rows", "table_csv_text", "table_markdown_text", "read_table_csv", "write_report"]


class NoResults(SchemaError):
    """A model named for Table 5 has no result CSVs at all (a usage error, not a damaged file)."""


@dataclass(frozen=True)
class TableRow:
    """One row of Table 5: `scores` per metric name (Overall is their mean, `overall`); `intervals` per column
    (a metric name or "Overall") when computed, else empty with the reason in `interval_note`."""

    label: str
    scores: Scores
    incomplete: Tuple[str, ...] = ()  # "<split>/<file>: what is missing" for each incomplete file behind the row
    intervals: Mapping[str, Interval] = field(default_factory=dict)
    interval_note: str = ""
    model: str = ""
    split: str = ""  # "" = all test samples of the model, else "in" / "out"

    @property
    def overall(self) -> float:
        return overall(self.scores)

    def value(self, column: str) -> float:
        return self.overall if column == OVERALL else self.scores[column]


@dataclass(frozen=True)
class Table5:
    """Table 5 as data: the rows, and how the numbers were made (what table5.json holds)."""

    rows: List[TableRow]
    aggregation: str = "paper"
    intervals: Optional[IntervalSettings] = None  # None: no intervals asked for

    def combined_rows(self) -> List[TableRow]:
        """One row per model over all its test samples (what the charts draw)."""
        return [row for row in self.rows if not row.split]

    def to_json(self) -> dict:
        settings = None if self.intervals is None else {
            "confidence": self.intervals.confidence, "method": self.intervals.method,
            "n_resamples": self.intervals.n_resamples, "seed": self.intervals.seed,
            "resampling": "samples with replacement within each results file; a sample keeps its 8 metrics"}
        return {"aggregation": self.aggregation, "intervals": settings, "rows": [
            {"label": row.label, "model": row.model, "split": row.split or "all",
             "scores": {column: _json_number(row.value(column)) for column in COLUMNS},
             "intervals": {column: [_json_number(v) for v in interval] for column, interval in row.intervals.items()},
             "interval_note": row.interval_note, "incomplete": list(row.incomplete)} for row in self.rows]}


def _json_number(value: float) -> Optional[float]:
    return None if math.isnan(value) else value


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


def read_model_results(eval_dir: PathLike, model: str) -> Dict[str, List[FileResult]]:
    """{split: per-file results} of a model; NoResults when it has none at all."""
    by_split = {split: read_split(eval_dir, split, model) for split in SPLITS}
    if not any(by_split.values()):
        raise NoResults(eval_dir, f"no result CSVs for model {model!r} in {{in,out}}-test_results/{model}/")
    return by_split


def _model_rows(model: str, by_split: Mapping[str, Sequence[FileResult]], aggregation: str) -> List[TableRow]:
    rows = [TableRow(model, combined_scores(by_split, aggregation), _incomplete_files(by_split), model=model)]
    if all(by_split.values()):
        for split in SPLITS:
            rows.append(TableRow(f"{model} ({SPLIT_LABELS[split]})", split_scores(by_split[split], aggregation),
                                 _incomplete_files({split: by_split[split]}), model=model, split=split))
    return rows


def row_splits(row: TableRow, by_split: Mapping[str, Sequence[FileResult]]) -> Tuple[str, ...]:
    """The splits whose samples a row averages."""
    return (row.split,) if row.split else tuple(split for split in SPLITS if by_split.get(split))


def _with_intervals(rows: List[TableRow], strata: Mapping[str, List[Stratum]], missing: Mapping[str, str],
                    by_split: Mapping[str, Sequence[FileResult]], aggregation: str,
                    settings: IntervalSettings) -> List[TableRow]:
    """The model's rows with their intervals, from one bootstrap over all its strata (so its rows agree)."""
    every = [stratum for split in SPLITS for stratum in strata.get(split, [])]
    weights: Dict[int, List[float]] = {}  # row index -> weight of each stratum in `every`
    for index, row in enumerate(rows):
        needed = row_splits(row, by_split)
        if all(split in strata for split in needed):
            used = [s for s in every if s.split in needed]
            row_weights = dict(zip((s.key for s in used), aggregation_weights(used, aggregation)))
            weights[index] = [row_weights.get(s.key, 0.0) for s in every]
    boot = (bootstrap_cells([s.ratios for s in every], np.array(list(weights.values())), settings, rows[0].model)
            if weights else None)
    out = []
    for index, row in enumerate(rows):
        if index in weights:
            out.append(replace(row, intervals=boot.intervals(list(weights).index(index))))
        else:
            reasons = [missing[split] for split in row_splits(row, by_split) if split in missing]
            out.append(replace(row, interval_note="no interval: " + "; ".join(reasons)))
    return out


@dataclass(frozen=True)
class ModelData:
    """What a model's rows are made of: its per-file results, and (for intervals) the samples behind them."""

    model: str
    results: Dict[str, List[FileResult]]  # split -> per-file results
    strata: Dict[str, List[Stratum]] = field(default_factory=dict)  # split -> samples per file (reviews there)
    missing: Dict[str, str] = field(default_factory=dict)  # split -> why it has no samples


def load_model(eval_dir: PathLike, model: str, samples: bool = True) -> ModelData:
    """The model's results (NoResults when it has none; SchemaError naming a CSV that cannot be read) and, with
    `samples`, the reviews behind them (mmrole.eval.sample_scores.model_strata)."""
    results = read_model_results(eval_dir, model)
    if not samples:
        return ModelData(model, results)
    strata, missing = model_strata(eval_dir, model, results)
    return ModelData(model, results, strata, missing)


def table_of(data: Sequence[ModelData], aggregation: str = "paper", intervals: Optional[IntervalSettings] = None
             ) -> Table5:
    rows = []
    for model in data:
        model_rows = _model_rows(model.model, model.results, aggregation)
        if intervals is not None:
            model_rows = _with_intervals(model_rows, model.strata, model.missing, model.results, aggregation, intervals)
        rows += model_rows
    return Table5(rows, aggregation, intervals)


def table5(eval_dir: PathLike, models: Iterable[str], aggregation: str = "paper",
           intervals: Optional[IntervalSettings] = None) -> Table5:
    """Per model: the row over all test samples, then `(In-Test)` and `(Out-Test)` rows when the model has results
    for both splits; with `intervals`, each row's bootstrap intervals where its reviews are there. NoResults when a
    model has no results at all; SchemaError naming a CSV that cannot be read. Rows from incomplete files name them
    (TableRow.incomplete)."""
    return table_of([load_model(eval_dir, model, intervals is not None) for model in models], aggregation, intervals)


def table5_rows(eval_dir: PathLike, models: Iterable[str], aggregation: str = "paper",
                intervals: Optional[IntervalSettings] = None) -> List[TableRow]:
    """The rows of `table5` (see there)."""
    return table5(eval_dir, models, aggregation, intervals).rows


# --- the table as text ---------------------------------------------------------------------------

TABLE_COLUMNS = ("model", *METRIC_ABBRS, "Overall")
INCOMPLETE_COLUMN = "incomplete"  # only in tables holding a row built from incomplete results
INTERVAL_COLUMNS = tuple(f"{abbr}_{end}" for abbr in (*METRIC_ABBRS, "Overall") for end in ("low", "high"))
NO_INTERVAL_COLUMN = "no_interval"  # only in tables with intervals where some row has none: why


def row_is_incomplete(row: TableRow) -> bool:
    return bool(row.incomplete) or any(math.isnan(v) for v in row.scores.values())


def _incomplete_cell(row: TableRow) -> str:
    if row.incomplete:
        return f"{len(row.incomplete)} incomplete file(s): " + "; ".join(row.incomplete)
    return "no score for some metric (nan)" if row_is_incomplete(row) else ""


def _has_intervals(rows: Sequence[TableRow]) -> bool:
    return any(row.intervals or row.interval_note for row in rows)


def _columns(rows: Sequence[TableRow]) -> Tuple[str, ...]:
    columns = TABLE_COLUMNS
    if _has_intervals(rows):
        columns += INTERVAL_COLUMNS
        if any(row.interval_note for row in rows):
            columns += (NO_INTERVAL_COLUMN,)
    return columns + ((INCOMPLETE_COLUMN,) if any(map(row_is_incomplete, rows)) else ())


def _number(value: float, decimals: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{decimals}f}"


def _csv_cells(row: TableRow, decimals: int, columns: Sequence[str]) -> List[str]:
    cells = [row.label] + [_number(row.value(column), decimals) for column in COLUMNS]
    if INTERVAL_COLUMNS[0] in columns:
        for column in COLUMNS:
            interval = row.intervals.get(column)
            cells += [_number(v, decimals) for v in interval] if interval else ["", ""]
    if NO_INTERVAL_COLUMN in columns:
        cells.append(row.interval_note)
    return cells + ([_incomplete_cell(row)] if INCOMPLETE_COLUMN in columns else [])


def table_csv_text(rows: Sequence[TableRow], decimals: int = 3) -> str:
    """Table 5 as CSV in the layout of the published table5.csv; then, with intervals, `<column>_low,<column>_high`
    for each of the nine columns (empty for a row without, and a `no_interval` column saying why); and the
    `incomplete` column when a row is built from incomplete results."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = _columns(rows)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(_csv_cells(row, decimals, columns))
    return buffer.getvalue()


def _markdown_cell(row: TableRow, column: str, decimals: int) -> str:
    text = _number(row.value(column), decimals)
    interval = row.intervals.get(column)
    return text + (f" [{_number(interval.low, decimals)}, {_number(interval.high, decimals)}]" if interval else "")


def table_markdown_text(rows: Sequence[TableRow], decimals: int = 3, settings: Optional[IntervalSettings] = None
                        ) -> str:
    """Table 5 in Markdown; a cell with an interval reads `0.994 [0.982, 1.006]`, and a note under the table says
    how the intervals were made and why a row has none."""
    incomplete = any(map(row_is_incomplete, rows))
    header = list(TABLE_COLUMNS) + ([INCOMPLETE_COLUMN] if incomplete else [])
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" + "---:|" * len(COLUMNS) + ("---|" if incomplete else "")]
    for row in rows:
        cells = [row.label] + [_markdown_cell(row, column, decimals) for column in COLUMNS]
        lines.append("| " + " | ".join(cells + ([_incomplete_cell(row)] if incomplete else [])) + " |")
    if settings is not None and _has_intervals(rows):
        lines += ["", f"[low, high]: {settings.confidence:.0%} bootstrap interval ({settings.method}, "
                      f"{settings.n_resamples} resamples of the samples within each results file, seed {settings.seed})."]
        lines += [f"{row.label}: {row.interval_note}." for row in rows if row.interval_note]
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


def read_table_intervals(path: PathLike) -> Dict[str, Dict[str, Interval]]:
    """The intervals of a Table 5 CSV written with them: {row label: {metric name or Overall: Interval}} (rows
    without intervals are left out)."""
    table = {}
    with Path(path).open(encoding="utf-8", newline="") as f:
        for record in csv.DictReader(f):
            abbrs = {column: ABBR_OF.get(column, column) for column in COLUMNS}
            if record.get(f"{abbrs[OVERALL]}_low"):
                table[record["model"]] = {column: Interval(float(record[f"{abbr}_low"]), float(record[f"{abbr}_high"]))
                                          for column, abbr in abbrs.items()}
    return table


def write_table(table: Table5, output_dir: PathLike, decimals: int = 3) -> None:
    """table5.csv, table5.md, table5.json (all digits, for programs), radar.png and dimensions.png."""
    from .charts import dimension_bar_chart, radar_chart  # matplotlib only when charts are drawn

    output_dir = Path(output_dir)
    atomic_write_text(output_dir / "table5.csv", table_csv_text(table.rows, decimals))
    atomic_write_text(output_dir / "table5.md", table_markdown_text(table.rows, decimals, table.intervals))
    atomic_write_json(output_dir / "table5.json", table.to_json(), indent=2)
    # The charts' legends say it too: "<model> (incomplete)".
    chart_rows = [replace(row, label=f"{row.label} (incomplete)") if row_is_incomplete(row) else row
                  for row in table.combined_rows()]
    radar_chart(chart_rows, output_dir / "radar.png")
    dimension_bar_chart(chart_rows, output_dir / "dimensions.png")


@dataclass(frozen=True)
class Report:
    """Everything eval/report.py writes, as data (the web app reads the same)."""

    table: Table5
    comparisons: List = field(default_factory=list)  # compare.Comparison, every pair of models
    ranking: List = field(default_factory=list)  # compare.RankedModel
    audits: List = field(default_factory=list)  # audit.GroupAudit


def evaluation_report(eval_dir: PathLike, models: Sequence[str], *, aggregation: str = "paper",
                      intervals: Optional[IntervalSettings] = None) -> Report:
    """Table 5 (with intervals when asked), every pair of models compared and ranked (with intervals, two models
    or more), and the judge audit of the models' reviews."""
    from .audit import audit_models
    from .compare import compare_all, rank_models

    data = [load_model(eval_dir, model, intervals is not None) for model in models]
    table = table_of(data, aggregation, intervals)
    comparisons, ranking = [], []
    if intervals is not None and len(models) > 1:
        comparisons = compare_all({model.model: model.strata for model in data}, aggregation, intervals)
        ranking = rank_models({row.model: row.overall for row in table.combined_rows()}, comparisons)
    return Report(table, comparisons, ranking, audit_models(eval_dir, models))


REPORT_FILES = ("table5.csv", "table5.md", "table5.json", "radar.png", "dimensions.png")


def write_report(
    eval_dir: PathLike, models: Sequence[str], output_dir: PathLike, *, aggregation: str = "paper", decimals: int = 3,
    intervals: Optional[IntervalSettings] = None,
) -> Report:
    """REPORT_FILES for the given models; with two models or more and intervals, comparisons.csv and ranking.md;
    when the models have reviews files, audit.md, audit.csv and audit.json."""
    from .audit import audit_csv_text, audit_json, audit_markdown
    from .compare import comparisons_csv_text, ranking_markdown

    report = evaluation_report(eval_dir, models, aggregation=aggregation, intervals=intervals)
    output_dir = Path(output_dir)
    write_table(report.table, output_dir, decimals)
    if report.comparisons:
        atomic_write_text(output_dir / "comparisons.csv", comparisons_csv_text(report.comparisons))
        atomic_write_text(output_dir / "ranking.md", ranking_markdown(report.ranking, report.comparisons, intervals))
    if report.audits:
        atomic_write_text(output_dir / "audit.md", audit_markdown(report.audits))
        atomic_write_text(output_dir / "audit.csv", audit_csv_text(report.audits))
        atomic_write_json(output_dir / "audit.json", audit_json(report.audits), indent=2)
    return report
