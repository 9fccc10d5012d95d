"""How the judge behaved, from the reviews files (eval/report.py writes audit.md, audit.csv and audit.json).

Per model, over its reviews files `DIR/{in,out}-test_reviews/<model>/*.json`, and again per dialogue type (the file)
and per character (the sample's `role`):
- parse failures: reviews (`rm_review[metric]` entries of reviewed samples) without a valid score pair (the
  original's `score: {}`, a score outside 0..10, a ground-truth score of 0), per metric, and missing entries;
- position bias, when the reviews were also asked with the answers swapped (`RM_review.py --swap`, field
  `rm_review_swapped`): swap consistency = the share of (sample, metric) pairs whose winner (evaluated answer,
  tie, ground truth) is the same in both orders; mean position bias = the mean ratio evaluated / ground truth
  when the evaluated answer is shown first minus when it is shown second (mmrole.eval.review.position_bias);
- length bias: Spearman's rank correlation (scipy.stats.spearmanr) between the length difference of the two
  answers (evaluated minus ground truth, in characters) and the score difference (A minus B), per metric; for
  Overall, the per-sample mean score difference over the metrics. A judge that rewards length shows rho > 0
  (no figure from fewer than MIN_CORRELATION_PAIRS samples);
- the mean ratio per metric and Overall (their mean), to see which dialogue types and characters it scores low.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

from ..common.metrics import ABBR_OF, METRIC_NAMES, score_ratio
from ..common.store import PathLike
from .files import REVIEW_KEY, SWAPPED_REVIEW_KEY, load_json_list, read_reviews
from .review import NORMAL, OK, SWAPPED, position_bias
from .sample_scores import SPLITS
from .stats import OVERALL

ALL, DIALOGUE_TYPE, CHARACTER = "all", "dialogue type", "character"
# Fewer pairs than this give no length correlation (nan): a rank correlation of a character's 3 samples says nothing.
MIN_CORRELATION_PAIRS = 10


@dataclass(frozen=True)
class AuditedSample:
    """One sample of a reviews file, as the audit sees it."""

    key: str  # "<split>/<file>/<id>": unique across the files of a model
    dialogue_type: str  # the file name without `_test`
    character: str
    reviewed: bool
    length_difference: int  # characters: evaluated answer - ground truth
    entries: Tuple[str, ...]  # metrics with an rm_review entry
    scores: Dict[str, Optional[Tuple[float, float]]]  # metric -> (evaluated, ground truth) or None
    swapped: Dict[str, Optional[Tuple[float, float]]]  # as presented swapped: (ground truth, evaluated)


def _answers(record) -> Tuple[str, str]:
    turn = record.get("conversations", [{}, {}])[1] if isinstance(record, dict) else {}
    answer, truth = turn.get("answer"), turn.get("value")
    return (answer if isinstance(answer, str) else ""), (truth if isinstance(truth, str) else "")


def read_audited_samples(path: PathLike, split: str) -> List[AuditedSample]:
    """The samples of one reviews file (the first record of a duplicated id, as everywhere)."""
    path = Path(path)
    records = {}
    for record in load_json_list(path):
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records.setdefault(record["id"], record)
    normal, _ = read_reviews(path)
    swapped = {s.id: s for s in read_reviews(path, review_key=SWAPPED_REVIEW_KEY)[0] if s.reviewed}
    dialogue_type = path.stem[:-len("_test")] if path.stem.endswith("_test") else path.stem
    samples = []
    for sample in normal:
        record = records.get(sample.id, {})
        answer, truth = _answers(record)
        review = record.get(REVIEW_KEY)
        other = swapped.get(sample.id)
        samples.append(AuditedSample(
            f"{split}/{path.stem}/{sample.id}", dialogue_type, str(record.get("role", "?")), sample.reviewed,
            len(answer) - len(truth), tuple(m for m in METRIC_NAMES if isinstance(review, dict) and m in review),
            dict(sample.scores), dict(other.scores) if other else {}))
    return samples


def read_model_samples(eval_dir: PathLike, model: str) -> List[AuditedSample]:
    samples = []
    for split in SPLITS:
        folder = Path(eval_dir) / f"{split}-test_reviews" / model
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            samples += read_audited_samples(path, split)
    return samples


@dataclass(frozen=True)
class MetricAudit:
    metric: str  # a metric name, or Overall (all metrics pooled)
    reviews: int  # entries present in reviewed samples
    failures: int  # of them, without a valid score pair
    missing: int  # reviewed samples without an entry for the metric
    mean_ratio: float
    swap_pairs: int  # (sample, metric) pairs with a valid score in both orders
    swap_consistency: float
    position_bias: float
    length_pairs: int
    length_spearman: float
    length_p: float

    @property
    def failure_rate(self) -> float:
        return self.failures / self.reviews if self.reviews else math.nan


@dataclass(frozen=True)
class GroupAudit:
    model: str
    kind: str  # all, dialogue type, character
    group: str
    samples: int
    not_reviewed: int  # e.g. empty answers, not sent to the judge (as the original)
    metrics: Dict[str, MetricAudit] = field(default_factory=dict)  # the eight metrics, then Overall


def _spearman(xs: Sequence[float], ys: Sequence[float]) -> Tuple[float, float]:
    if len(xs) < MIN_CORRELATION_PAIRS or len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan, math.nan
    result = scipy_stats.spearmanr(xs, ys)
    return float(result.statistic), float(result.pvalue)


def _swap_records(samples: Sequence[AuditedSample], metrics: Sequence[str]) -> List[dict]:
    """The normal and swapped scores in the shape of RM_review's journal records (what position_bias reads)."""
    records = []
    for s in samples:
        for metric in metrics:
            for order, pair in ((NORMAL, s.scores.get(metric)), (SWAPPED, s.swapped.get(metric))):
                if pair is not None:
                    records.append({"id": s.key, "metric": metric, "order": order, "status": OK, "score": list(pair)})
    return records


def _metric_audit(metric: str, samples: Sequence[AuditedSample], metrics: Sequence[str]) -> MetricAudit:
    """One metric (or, for Overall, all of `metrics` pooled) over the reviewed samples."""
    reviewed = [s for s in samples if s.reviewed]
    reviews = sum(m in s.entries for s in reviewed for m in metrics)
    failures = sum(m in s.entries and s.scores.get(m) is None for s in reviewed for m in metrics)
    missing = sum(m not in s.entries for s in reviewed for m in metrics)
    ratios = {m: [score_ratio(s.scores[m]) for s in reviewed if s.scores.get(m) is not None] for m in metrics}
    means = [float(np.mean(r)) for r in ratios.values() if r]
    mean_ratio = float(np.mean(means)) if len(means) == len(metrics) else math.nan
    bias = [b for b in position_bias(_swap_records(reviewed, metrics), metrics) if b.pairs]
    pairs = sum(b.pairs for b in bias)
    consistency = sum((1 - b.winner_flips) * b.pairs for b in bias) / pairs if pairs else math.nan
    shift = sum((b.ratio_a_first - b.ratio_b_first) * b.pairs for b in bias) / pairs if pairs else math.nan
    lengths, differences = [], []
    for s in reviewed:
        scored = [s.scores[m][0] - s.scores[m][1] for m in metrics if s.scores.get(m) is not None]
        if scored:
            lengths.append(s.length_difference)
            differences.append(float(np.mean(scored)))
    rho, p = _spearman(lengths, differences)
    return MetricAudit(metric, reviews, failures, missing, mean_ratio, pairs, consistency, shift, len(lengths), rho, p)


def audit_group(model: str, kind: str, group: str, samples: Sequence[AuditedSample]) -> GroupAudit:
    metrics = {m: _metric_audit(m, samples, (m,)) for m in METRIC_NAMES}
    metrics[OVERALL] = _metric_audit(OVERALL, samples, METRIC_NAMES)
    return GroupAudit(model, kind, group, len(samples), sum(not s.reviewed for s in samples), metrics)


def audit_model(model: str, samples: Sequence[AuditedSample]) -> List[GroupAudit]:
    """The model as a whole, then per dialogue type, then per character (both in sorted order)."""
    groups = [audit_group(model, ALL, ALL, samples)]
    for kind, attribute in ((DIALOGUE_TYPE, "dialogue_type"), (CHARACTER, "character")):
        for value in sorted({getattr(s, attribute) for s in samples}):
            groups.append(audit_group(model, kind, value, [s for s in samples if getattr(s, attribute) == value]))
    return groups


def audit_models(eval_dir: PathLike, models: Iterable[str]) -> List[GroupAudit]:
    """Every group of every model that has reviews files (models without any are left out)."""
    audits = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        for model in models:
            samples = read_model_samples(eval_dir, model)
            if samples:
                audits += audit_model(model, samples)
    return audits


# --- as data and text ----------------------------------------------------------------------------

AUDIT_FIELDS = ("model", "kind", "group", "samples", "not_reviewed", "metric", "reviews", "failures", "missing",
                "failure_rate", "mean_ratio", "swap_pairs", "swap_consistency", "position_bias", "length_pairs",
                "length_spearman", "length_p")


def audit_csv_text(audits: Sequence[GroupAudit]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(AUDIT_FIELDS)
    for g in audits:
        for m in g.metrics.values():
            writer.writerow([g.model, g.kind, g.group, g.samples, g.not_reviewed, m.metric, m.reviews, m.failures,
                             m.missing, m.failure_rate, m.mean_ratio, m.swap_pairs, m.swap_consistency,
                             m.position_bias, m.length_pairs, m.length_spearman, m.length_p])
    return buffer.getvalue()


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def audit_json(audits: Sequence[GroupAudit]) -> List[dict]:
    return [_clean({**{k: v for k, v in asdict(g).items() if k != "metrics"},
                    "metrics": {name: {**asdict(m), "failure_rate": m.failure_rate} for name, m in g.metrics.items()}})
            for g in audits]


def _fmt(value: float, spec: str = ".3f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def _failures_table(overall: Sequence[GroupAudit]) -> List[str]:
    lines = ["| model | " + " | ".join(ABBR_OF[m] for m in METRIC_NAMES) + " | all | not reviewed |",
             "|---|" + "---:|" * (len(METRIC_NAMES) + 2)]
    for g in overall:
        cells = [f"{g.metrics[m].failures}/{g.metrics[m].reviews}" for m in METRIC_NAMES]
        total = g.metrics[OVERALL]
        cells.append(f"{total.failures}/{total.reviews} ({_fmt(100 * total.failure_rate, '.1f')}%)")
        lines.append(f"| {g.model} | " + " | ".join(cells) + f" | {g.not_reviewed} |")
    return lines


def _bias_table(overall: Sequence[GroupAudit]) -> List[str]:
    lines = ["| model | swapped pairs | swap consistency | mean position bias | length: pairs | Spearman rho | p |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for g in overall:
        m = g.metrics[OVERALL]
        lines.append(f"| {g.model} | {m.swap_pairs} | {_fmt(m.swap_consistency)} | {_fmt(m.position_bias, '+.4f')} | "
                     f"{m.length_pairs} | {_fmt(m.length_spearman, '+.3f')} | {_fmt(m.length_p, '.2g')} |")
    return lines


def _group_table(audits: Sequence[GroupAudit], kind: str, limit: int) -> List[str]:
    """Mean Overall ratio per group (rows) and model (columns); with more groups than `limit`, the lowest and highest
    limit/2 by their mean over the models."""
    models = list(dict.fromkeys(g.model for g in audits))
    table: Dict[str, Dict[str, GroupAudit]] = {}
    for g in audits:
        if g.kind == kind:
            table.setdefault(g.group, {})[g.model] = g
    def mean_over_models(group: str) -> float:
        ratios = [g.metrics[OVERALL].mean_ratio for g in table[group].values()]
        ratios = [r for r in ratios if not math.isnan(r)]
        return sum(ratios) / len(ratios) if ratios else math.inf  # groups without a score last

    ordered = sorted(table, key=mean_over_models)
    shown = ordered if len(ordered) <= limit else ordered[:limit // 2] + ordered[-(limit // 2):]
    lines = [f"| {kind} | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for group in shown:
        cells = [f"{_fmt(table[group][m].metrics[OVERALL].mean_ratio)} (n={table[group][m].samples})"
                 if m in table[group] else "-" for m in models]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    if len(shown) < len(ordered):
        lines.append(f"\n({len(ordered) - len(shown)} more between them in audit.csv; sorted by the mean over models.)")
    return lines


def audit_markdown(audits: Sequence[GroupAudit], character_limit: int = 10) -> str:
    overall = [g for g in audits if g.kind == ALL]
    if not overall:
        return "# Judge audit\n\nNo reviews files for these models: nothing to audit.\n"
    swapped = any(g.metrics[OVERALL].swap_pairs for g in overall)
    lines = ["# Judge audit", "", "From the reviews files (`{in,out}-test_reviews/<model>/`); every figure per metric, "
             "dialogue type and character is in audit.csv / audit.json (mmrole/eval/audit.py says how each is made).",
             "", "## Parse failures", "", "Reviews without a valid score pair / reviews asked, per metric; samples not "
             "sent to the judge (empty answers, as the original) apart.", "", *_failures_table(overall), "",
             "## Position and length bias", "",
             ("Swap consistency: share of (sample, metric) pairs whose winner survives swapping the answers; position "
              "bias: mean ratio with the evaluated answer first minus second." if swapped else
              "No swapped reviews (`RM_review.py --swap`): position bias not measured."),
             "Length bias: Spearman rho between the answers' length difference (evaluated - ground truth, characters) "
             "and the mean score difference (A - B) per sample; > 0 means longer answers score higher.", "",
             *_bias_table(overall), "", "## By dialogue type (mean Overall ratio)", "",
             *_group_table(audits, DIALOGUE_TYPE, limit=20), "", "## By character (mean Overall ratio)", "",
             *_group_table(audits, CHARACTER, limit=character_limit)]
    return "\n".join(lines) + "\n"
