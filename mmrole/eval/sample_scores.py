"""Per-sample scores behind a model's result CSVs, and how Table 5 weighs files and splits.

The statistics (mmrole.eval.stats) need what the CSVs average: per sample, its ratio evaluated / ground truth on
each metric. They come from the reviews files beside the results, `DIR/<split>-test_reviews/<model>/<name>.json`
for `DIR/<split>-test_results/<model>/<name>.csv`. A reviews file is used only when it gives its CSV back (the
same count and means, under the default policy of RM_result or under --strict); a split of which any file has no
such reviews has no per-sample scores, and the reason is kept (the published Out-Test results, for one, come
without their reviews).

Table 5's weights (`aggregation_weights`): `paper` (the default, what the published Table 5 is) makes each split
the plain mean of its files and weighs In-Test 3 : Out-Test 1; `samples` weighs each file by its sample count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ..common.metrics import METRIC_NAMES, score_ratio
from ..common.store import PathLike
from .files import SchemaError, read_reviews
from .results import FileResult, scored_samples

SPLITS = ("in", "out")
SPLIT_LABELS = {"in": "In-Test", "out": "Out-Test"}
# The paper's combined row weighs In-Test three times Out-Test (found by fitting, see mmrole/eval/report.py).
PAPER_SPLIT_WEIGHTS = {"in": 3.0, "out": 1.0}
AGGREGATIONS = ("paper", "samples")
# A reviews file gives its CSV back when count and every mean agree to this (sums in another order differ in the
# last bits; a different file differs by far more).
SAME_MEAN = 1e-9


@dataclass(frozen=True)
class Stratum:
    """The samples of one results file: ids in file order and their ratios (samples x 8 metrics, nan = no score)."""

    split: str
    name: str
    ids: Tuple[str, ...]
    ratios: np.ndarray

    @property
    def key(self) -> str:
        return f"{self.split}/{self.name}"

    def __len__(self) -> int:
        return len(self.ids)


def reviews_path(eval_dir: PathLike, split: str, model: str, name: str) -> Path:
    return Path(eval_dir) / f"{split}-test_reviews" / model / f"{name}.json"


def _ratio_rows(scored) -> np.ndarray:
    rows = [[np.nan if pairs[m] is None or score_ratio(pairs[m]) is None else score_ratio(pairs[m])
             for m in METRIC_NAMES] for _, pairs in scored]
    return np.array(rows, dtype=float).reshape(len(rows), len(METRIC_NAMES))


def _gives_back(ratios: np.ndarray, result: FileResult) -> bool:
    if len(ratios) != result.count or not len(ratios):
        return False
    present = ~np.isnan(ratios)
    for k, name in enumerate(METRIC_NAMES):
        expected = result.scores[name]
        if not present[:, k].any():
            if not np.isnan(expected):
                return False
            continue
        if not abs(ratios[present[:, k], k].mean() - expected) <= SAME_MEAN:
            return False
    return True


def read_stratum(path: PathLike, split: str, result: FileResult) -> Stratum:
    """The samples behind one result CSV, read from its reviews file; SchemaError (naming it) when the file cannot
    be read or does not give the CSV's count and means back under either scoring policy of RM_result."""
    samples, _ = read_reviews(path)
    for strict in (False, True):
        scored = scored_samples(samples, strict=strict)
        ratios = _ratio_rows(scored)
        if _gives_back(ratios, result):
            return Stratum(split, result.name, tuple(sample_id for sample_id, _ in scored), ratios)
    raise SchemaError(path, f"does not give its result CSV back (count {result.count} and the metric means): "
                            "reviews and results are from different runs")


def model_strata(eval_dir: PathLike, model: str, results: Mapping[str, Sequence[FileResult]]
                 ) -> Tuple[Dict[str, List[Stratum]], Dict[str, str]]:
    """Per split, the strata of the model's result files; and per split without them, why not (no reviews file,
    or reviews that do not give the CSV back)."""
    strata: Dict[str, List[Stratum]] = {}
    missing: Dict[str, str] = {}
    for split, files in results.items():
        if not files:
            continue
        found = []
        for result in files:
            path = reviews_path(eval_dir, split, model, result.name)
            if not path.is_file():
                missing[split] = f"{SPLIT_LABELS[split]} has no reviews file {path}"
                break
            try:
                found.append(read_stratum(path, split, result))
            except SchemaError as e:
                missing[split] = str(e)
                break
        else:
            strata[split] = found
    return strata, missing


def aggregation_weights(strata: Sequence[Stratum], aggregation: str) -> np.ndarray:
    """Each stratum's weight in a Table 5 cell over these strata (they sum to 1). paper: a split's files share its
    weight equally, splits as PAPER_SPLIT_WEIGHTS; samples: by sample count."""
    if aggregation == "samples":
        counts = np.array([len(s) for s in strata], dtype=float)
        return counts / counts.sum()
    if aggregation != "paper":
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    splits = {s.split for s in strata}
    total = sum(PAPER_SPLIT_WEIGHTS[split] for split in splits)
    files = {split: sum(1 for s in strata if s.split == split) for split in splits}
    return np.array([PAPER_SPLIT_WEIGHTS[s.split] / total / files[s.split] for s in strata])
