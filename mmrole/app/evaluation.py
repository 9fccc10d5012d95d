"""The evaluation browser's data: an evaluation folder in the published layout, read (never written) with the
evaluation's own readers.

    DIR/{in,out}-test_answers/<model>/<type>_test.json    answers (conversations[1].answer)
    DIR/{in,out}-test_reviews/<model>/<type>_test.json    the same with rm_review: per metric {review, score}
    DIR/{in,out}-test_results/<model>/<type>_test.csv     per-file results (RM_result)
    DIR/table5.csv                                         a Table 5 shipped with the folder (the published one)

This is `../shared/mmrole_reference` and the `eval/` folder demo.sh writes. Files are read with mmrole.eval.files
(records, and the reviews' score pairs validated as RM_result validates them) and Table 5 with mmrole.eval.report,
so the page shows what the evaluation computes. A file that cannot be read is a line of `problems` naming it, and
the rest is shown; an empty folder is a folder with no models and one problem saying what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..common.metrics import METRIC_NAMES, score_ratio
from ..common.store import PathLike
from ..eval.files import REVIEW_KEY, SchemaError, load_test_samples, read_reviews
from ..eval.report import NoResults, TableRow, read_table_csv, table5_rows

SPLITS = {"in": "In-Test", "out": "Out-Test"}
DIALOGUE_TYPES = ("comment", "human-role", "inter-role")
ALL = "all"
SORTS = ("file order", "score gap")


@dataclass(frozen=True)
class Review:
    text: str
    pair: Optional[Tuple[float, float]]  # (evaluated, ground truth); None: no valid score pair

    @property
    def ratio(self) -> Optional[float]:
        return score_ratio(self.pair) if self.pair is not None else None


@dataclass
class ModelOutput:
    """One model's answer to one sample, and the judge's reviews of it (empty when the folder has no reviews)."""

    answer: Optional[str]
    reviews: Dict[str, Review] = field(default_factory=dict)

    def score(self, metric: str = ALL) -> Optional[float]:
        """The ratio evaluated / ground truth of one metric, or the mean of the valid ones (ALL); None without any."""
        names = METRIC_NAMES if metric == ALL else (metric,)
        ratios = [r for r in (self.reviews[n].ratio for n in names if n in self.reviews) if r is not None]
        return sum(ratios) / len(ratios) if ratios else None


@dataclass
class Sample:
    split: str
    type: str
    id: str
    image: str
    question: str
    ground_truth: str
    role: str
    script: str
    other_role: str
    outputs: Dict[str, ModelOutput] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """What names the sample in the page and its URL."""
        return f"{self.split}/{self.type}/{self.id}"


@dataclass
class EvalFolder:
    path: Path
    samples: Dict[str, Sample] = field(default_factory=dict)  # by key, in file order
    table: List[TableRow] = field(default_factory=list)
    published_table: Optional[Dict[str, Dict[str, float]]] = None
    problems: List[str] = field(default_factory=list)

    @property
    def models(self) -> List[str]:
        return sorted({model for sample in self.samples.values() for model in sample.outputs})

    @property
    def characters(self) -> List[str]:
        return sorted({sample.role for sample in self.samples.values()})


def _model_folders(path: Path, split: str, kind: str) -> List[Path]:
    folder = path / f"{split}-test_{kind}"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def load_eval_folder(path: PathLike) -> EvalFolder:
    """Everything the browser shows of one folder; unreadable files are listed in `problems`."""
    folder = EvalFolder(Path(path))
    for split in SPLITS:
        reviewed = set()  # (model, file name): a reviews file holds the answers too
        for model_dir in _model_folders(folder.path, split, "reviews"):
            for file in sorted(model_dir.glob("*_test.json")):
                reviewed.add((model_dir.name, file.name))
                _read_file(folder, split, model_dir.name, file, with_reviews=True)
        for model_dir in _model_folders(folder.path, split, "answers"):  # answers not reviewed (yet): shown alone
            for file in sorted(model_dir.glob("*_test.json")):
                if (model_dir.name, file.name) not in reviewed:
                    _read_file(folder, split, model_dir.name, file, with_reviews=False)
    _read_tables(folder)
    if not folder.samples and not folder.table:
        folder.problems.insert(0, f"{folder.path}: no evaluation files here (expected the published layout: "
                                  "{in,out}-test_answers/<model>/<type>_test.json, {in,out}-test_reviews/<model>/..., "
                                  "{in,out}-test_results/<model>/<type>_test.csv)")
    return folder


def _read_file(folder: EvalFolder, split: str, model: str, file: Path, *, with_reviews: bool) -> None:
    dialogue_type = file.name[: -len("_test.json")]
    try:
        records, problems = load_test_samples(file, need_ground_truth=False)
        scores = {s.id: s.scores for s in read_reviews(file)[0]} if with_reviews else {}
    except SchemaError as e:
        folder.problems.append(str(e))
        return
    folder.problems += [str(p) for p in problems]
    for record in records:
        key = f"{split}/{dialogue_type}/{record.id}"
        sample = folder.samples.setdefault(key, Sample(
            split, dialogue_type, record.id, record.image, record.question, record.ground_truth, record.role,
            record.script, record.other_role))
        output = ModelOutput(record.answer)
        review = record.raw.get(REVIEW_KEY) if with_reviews else None
        if isinstance(review, dict):
            for metric in METRIC_NAMES:
                entry = review.get(metric)
                text = entry.get("review") if isinstance(entry, dict) else None
                if isinstance(text, str):
                    output.reviews[metric] = Review(text, scores.get(record.id, {}).get(metric))
        sample.outputs[model] = output


def _read_tables(folder: EvalFolder) -> None:
    """Table 5 of every model with result CSVs, computed as eval/report.py computes it, one model at a time (a
    damaged CSV costs its model's rows only). Seam: when report.py gives rows with bootstrap intervals, this is the
    one place that asks for them; `TableRow` carries them to the page."""
    models = sorted({p.name for split in SPLITS for p in _model_folders(folder.path, split, "results")})
    for model in models:
        try:
            folder.table += table5_rows(folder.path, [model])
        except (SchemaError, NoResults) as e:
            folder.problems.append(str(e))
    published = folder.path / "table5.csv"
    if published.is_file():
        try:
            folder.published_table = read_table_csv(published)
        except (OSError, KeyError, ValueError) as e:
            folder.problems.append(f"{published}: not a Table 5 CSV (model,IA,...,TC,Overall): {e}")


# --- what the page selects -------------------------------------------------------------------------

def score_gap(sample: Sample, metric: str, model_a: str, model_b: Optional[str]) -> Optional[float]:
    """How far apart the scores are: |A - B| for two models; for one model, how far it falls short of the ground
    truth (1 - its ratio; negative when judged better). None when a score is missing."""
    a = sample.outputs[model_a].score(metric) if model_a in sample.outputs else None
    if model_b is None:
        return None if a is None else 1.0 - a
    b = sample.outputs[model_b].score(metric) if model_b in sample.outputs else None
    return None if a is None or b is None else abs(a - b)


def select(folder: EvalFolder, *, split: str = ALL, dialogue_type: str = ALL, character: str = ALL,
           metric: str = ALL, model_a: Optional[str] = None, model_b: Optional[str] = None,
           sort: str = SORTS[0]) -> List[Sample]:
    """The samples the filters keep (and that model A answered, when one is chosen), in file order or by score gap
    (largest first; samples without the scores last)."""
    kept = [s for s in folder.samples.values()
            if split in (ALL, s.split) and dialogue_type in (ALL, s.type) and character in (ALL, s.role)
            and (model_a is None or model_a in s.outputs) and (model_b is None or model_b in s.outputs)]
    if sort == "score gap" and model_a is not None:
        gaps = {s.key: score_gap(s, metric, model_a, model_b) for s in kept}
        kept.sort(key=lambda s: (gaps[s.key] is None, -(gaps[s.key] or 0.0)))
    return kept


def format_score(value: Optional[float]) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


def overall_rows(rows: Sequence[TableRow]) -> List[TableRow]:
    """The rows over all test samples (not the per-split rows): what the radar chart draws."""
    return [row for row in rows if not row.label.endswith(tuple(f"({label})" for label in SPLITS.values()))]
