"""Paired comparisons of models on the samples both have, and a ranking in which models that cannot be told
apart share a rank (eval/report.py writes them: comparisons.csv, ranking.md; `--compare A B` prints one pair).

Two models are compared on the samples both were reviewed on: the same results files (split and name) and, in
them, the same sample ids; per metric, the samples both have a score for. Per column (a metric or Overall):
- difference: Table 5 of A minus Table 5 of B over those samples (the same aggregation as the table);
- its bootstrap interval, both models resampled with the same draws (paired), within each file;
- wins / ties / losses: samples where A's ratio is higher / equal / lower (Overall: the mean over the metrics of
  A's minus B's ratio);
- p_permutation: two-sided paired permutation test of the difference (the sign of each sample's differences
  flipped at random, scipy.stats.permutation_test); p_sign: the sign test of wins against losses
  (scipy.stats.binomtest).

The ranking (`rank_models`): model X *beats* model Y when the interval of the paired Overall difference X - Y lies
entirely above 0. A model's rank is 1 + the number of models that beat it, so models that no model separates
from each other share a rank. Paired intervals rather than overlapping per-model intervals: the two models
answered the same samples, so much of their sampling error is shared, and comparing two separate intervals would
call many real differences ties. A pair without shared samples separates nothing.
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .sample_scores import Stratum, aggregation_weights
from .stats import COLUMNS, OVERALL, Interval, IntervalSettings, PairedColumn, paired_columns


@dataclass(frozen=True)
class Comparison:
    model_a: str
    model_b: str
    files: Tuple[str, ...]  # "<split>/<name>" of the results files compared
    samples: int  # samples both models have (in those files)
    columns: Dict[str, PairedColumn] = field(default_factory=dict)  # empty when nothing is shared
    note: str = ""  # why there is nothing to compare

    def overall(self) -> Optional[PairedColumn]:
        return self.columns.get(OVERALL)

    def a_beats_b(self) -> bool:
        column = self.overall()
        return column is not None and column.interval.low > 0

    def b_beats_a(self) -> bool:
        column = self.overall()
        return column is not None and column.interval.high < 0

    def reversed(self) -> "Comparison":
        """B against A: differences negated, interval ends and wins/losses swapped (the p-values stay)."""
        columns = {name: replace(c, difference=-c.difference, interval=Interval(-c.interval.high, -c.interval.low),
                                 wins=c.losses, losses=c.wins) for name, c in self.columns.items()}
        return replace(self, model_a=self.model_b, model_b=self.model_a, columns=columns)


def find_comparison(comparisons: Sequence[Comparison], model_a: str, model_b: str) -> Comparison:
    """A against B, from a list that holds the pair either way round (KeyError when it holds neither)."""
    for c in comparisons:
        if (c.model_a, c.model_b) == (model_a, model_b):
            return c
        if (c.model_a, c.model_b) == (model_b, model_a):
            return c.reversed()
    raise KeyError(f"no comparison of {model_a} and {model_b}")


def shared_strata(strata_a: Mapping[str, Sequence[Stratum]], strata_b: Mapping[str, Sequence[Stratum]]
                  ) -> List[Stratum]:
    """Per results file both models have, a Stratum of the samples both have whose ratios are A - B (nan where
    either has no score); samples without any shared score are left out."""
    shared = []
    for split in strata_a:
        by_name_b = {s.name: s for s in strata_b.get(split, [])}
        for a in strata_a[split]:
            b = by_name_b.get(a.name)
            if b is None:
                continue
            row_b = {sample_id: i for i, sample_id in enumerate(b.ids)}
            rows_a = [i for i, sample_id in enumerate(a.ids) if sample_id in row_b]
            ids = [a.ids[i] for i in rows_a]
            differences = a.ratios[rows_a] - b.ratios[[row_b[sample_id] for sample_id in ids]]
            keep = ~np.isnan(differences).all(axis=1)
            if keep.any():
                shared.append(Stratum(split, a.name, tuple(np.array(ids)[keep]), differences[keep]))
    return shared


def compare_models(model_a: str, strata_a: Mapping[str, Sequence[Stratum]], model_b: str,
                   strata_b: Mapping[str, Sequence[Stratum]], aggregation: str, settings: IntervalSettings
                   ) -> Comparison:
    """A against B on the samples both have (see the module doc)."""
    shared = shared_strata(strata_a, strata_b)
    if not shared:
        return Comparison(model_a, model_b, (), 0, note="no results file with reviewed samples that both models have")
    weights = aggregation_weights(shared, aggregation)
    columns = paired_columns([s.ratios for s in shared], weights, settings, key=f"{model_a} vs {model_b}")
    return Comparison(model_a, model_b, tuple(s.key for s in shared), sum(len(s) for s in shared),
                      {c.column: c for c in columns})


def compare_all(strata: Mapping[str, Mapping[str, Sequence[Stratum]]], aggregation: str, settings: IntervalSettings,
                pairs: Optional[Sequence[Tuple[str, str]]] = None) -> List[Comparison]:
    """Every pair of the models (in the given order), or just `pairs`."""
    pairs = pairs if pairs is not None else list(itertools.combinations(strata, 2))
    return [compare_models(a, strata[a], b, strata[b], aggregation, settings) for a, b in pairs]


@dataclass(frozen=True)
class RankedModel:
    rank: int
    model: str
    overall: float  # its Table 5 Overall
    beaten_by: Tuple[str, ...]  # models whose paired Overall difference over it lies above 0
    beats: Tuple[str, ...]


def rank_models(overall: Mapping[str, float], comparisons: Sequence[Comparison]) -> List[RankedModel]:
    """Rank = 1 + the number of models that beat this one (see the module doc); listed by rank, then by Overall."""
    beaten_by: Dict[str, List[str]] = {model: [] for model in overall}
    for c in comparisons:
        if c.a_beats_b():
            beaten_by[c.model_b].append(c.model_a)
        elif c.b_beats_a():
            beaten_by[c.model_a].append(c.model_b)
    ranked = [RankedModel(1 + len(beaten_by[model]), model, overall[model], tuple(beaten_by[model]),
                          tuple(other for other in overall if model in beaten_by[other])) for model in overall]
    return sorted(ranked, key=lambda r: (r.rank, -r.overall))


# --- as text -------------------------------------------------------------------------------------

COMPARISON_FIELDS = ("model_a", "model_b", "column", "files", "pairs", "difference", "low", "high", "wins", "ties",
                     "losses", "p_permutation", "p_sign")


def comparisons_csv_text(comparisons: Sequence[Comparison]) -> str:
    """One row per pair and column (all digits); a pair with nothing shared has one row with its note."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COMPARISON_FIELDS + ("note",))
    for c in comparisons:
        if not c.columns:
            writer.writerow([c.model_a, c.model_b] + [""] * (len(COMPARISON_FIELDS) - 2) + [c.note])
        for column in COLUMNS if c.columns else ():
            p = c.columns[column]
            writer.writerow([c.model_a, c.model_b, column, " ".join(c.files), p.pairs, repr(p.difference),
                             repr(p.interval.low), repr(p.interval.high), p.wins, p.ties, p.losses,
                             repr(p.p_permutation), repr(p.p_sign), ""])
    return buffer.getvalue()


def _p_text(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else "<0.0001"


def comparison_markdown(c: Comparison, confidence: float) -> str:
    """One pair, every column: the table `--compare A B` prints."""
    if not c.columns:
        return f"{c.model_a} vs {c.model_b}: {c.note}\n"
    lines = [f"{c.model_a} vs {c.model_b}: {c.samples} shared samples ({', '.join(c.files)})", "",
             f"| column | pairs | A - B | {confidence:.0%} interval | wins / ties / losses | p (permutation) | p (sign) |",
             "|---|---:|---:|---|---|---:|---:|"]
    for column in COLUMNS:
        p = c.columns[column]
        lines.append(f"| {column} | {p.pairs} | {p.difference:+.4f} | [{p.interval.low:+.4f}, {p.interval.high:+.4f}] "
                     f"| {p.wins} / {p.ties} / {p.losses} | {_p_text(p.p_permutation)} | {_p_text(p.p_sign)} |")
    return "\n".join(lines) + "\n"


def ranking_markdown(ranking: Sequence[RankedModel], comparisons: Sequence[Comparison], settings: IntervalSettings
                     ) -> str:
    """ranking.md: the ranks, then every pair's Overall comparison."""
    lines = ["# Ranking", "",
             f"Rank = 1 + the number of models that beat this one; X beats Y when the {settings.confidence:.0%} "
             "interval of the paired Overall difference X - Y (same samples, resampled together) lies above 0. "
             "Models no comparison separates share a rank.", "",
             "| rank | model | Overall | beaten by |", "|---:|---|---:|---|"]
    lines += [f"| {r.rank} | {r.model} | {r.overall:.3f} | {', '.join(r.beaten_by) or '-'} |" for r in ranking]
    lines += ["", "## Pairwise, Overall", "",
              f"| A | B | shared samples | A - B | {settings.confidence:.0%} interval | wins / ties / losses "
              "| p (permutation) | p (sign) |", "|---|---|---:|---:|---|---|---:|---:|"]
    for c in comparisons:
        p = c.overall()
        if p is None:
            lines.append(f"| {c.model_a} | {c.model_b} | 0 | | | | | {c.note} |")
            continue
        lines.append(f"| {c.model_a} | {c.model_b} | {c.samples} | {p.difference:+.4f} | "
                     f"[{p.interval.low:+.4f}, {p.interval.high:+.4f}] | {p.wins} / {p.ties} / {p.losses} | "
                     f"{_p_text(p.p_permutation)} | {_p_text(p.p_sign)} |")
    lines += ["", f"Bootstrap: {settings.method}, {settings.n_resamples} paired resamples within each results file; "
                  f"permutation test: {settings.n_resamples} random sign flips; seed {settings.seed}."]
    return "\n".join(lines) + "\n"
