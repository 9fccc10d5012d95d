"""What demo.sh prints at the end: Table 5 by the rule-based judge (the demo's GPT-4) and by the trained reward
model, with intervals, the two agents compared, how well the
reward model agrees with the rule-based judge on the test answers, how many reviews parse, how often each agent
speaks like its character, an example answer of each, and where the charts are.

    python -m mmrole.demo.summary --eval_dir demo_output/eval --report_dir demo_output/report \\
        --judge_report_dir demo_output/report/rule_judge --models demo-scripted demo-agent

It reads what the earlier steps wrote into the report folder: table5.md, comparisons.csv (eval/report.py) and
agreement_<split>.csv (eval/RM_agreement.py), and the reviews and answers under the eval folder. Parse rate =
reviews whose text yielded a score pair (the pair RM_review stored, parsed by mmrole.common.metrics.parse_score_pair)
/ reviews asked, over every reviews file of the model. Catchphrase rate = answers that open with the answering
character's catchphrase (every ground-truth reply of the demo data does).
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..common.cli import ArgumentParser, add_hidden_alias
from ..common.store import atomic_write_json
from ..eval.files import REVIEW_KEY, input_files, load_json_list, score_pair_of
from ..eval.sample_scores import SPLITS
from .data import character


@dataclass
class ModelSummary:
    model: str
    reviews: int = 0
    parsed: int = 0
    answers: int = 0
    catchphrases: int = 0
    example: Optional[dict] = None

    @property
    def parse_rate(self) -> float:
        return self.parsed / self.reviews if self.reviews else 0.0


def _records(folder: Path) -> List[dict]:
    """Every record of the folder's *.json files (none when the folder is missing)."""
    if not folder.is_dir():
        return []
    return [r for path in input_files(folder, None) for r in load_json_list(path) if isinstance(r, dict)]


def summarise(eval_dir, model: str) -> ModelSummary:
    eval_dir = Path(eval_dir)
    summary = ModelSummary(model)
    for split in SPLITS:
        for record in _records(eval_dir / f"{split}-test_reviews" / model):
            for entry in (record.get(REVIEW_KEY) or {}).values():
                summary.reviews += 1
                summary.parsed += score_pair_of(entry) is not None
        for record in _records(eval_dir / f"{split}-test_answers" / model):
            answer = record["conversations"][1].get("answer")
            role = character(record.get("role", ""))
            if answer is None or role is None:
                continue
            summary.answers += 1
            summary.catchphrases += answer.startswith(role.catchphrase)
            if summary.example is None and split == "in":
                summary.example = record
    return summary


def _csv_rows(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _number(text: str, spec: str = ".3f") -> str:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return "-"
    return "nan" if math.isnan(value) else format(value, spec)


def comparison_lines(report_dir: Path, models: Sequence[str]) -> List[str]:
    """The Overall comparison of the first two models, as A - B (comparisons.csv holds each pair once)."""
    if len(models) < 2:
        return []
    rows = {(r["model_a"], r["model_b"]): r for r in _csv_rows(report_dir / "comparisons.csv") if r["column"] == "Overall"}
    a, b = models[0], models[1]
    row, sign = (rows.get((a, b)), 1) if (a, b) in rows else (rows.get((b, a)), -1)
    if row is None or not row.get("difference"):
        return [f"{a} vs {b}: no comparison (see {report_dir / 'comparisons.csv'})"]
    low, high = sorted((sign * float(row["low"]), sign * float(row["high"])))
    wins, losses = (row["wins"], row["losses"]) if sign == 1 else (row["losses"], row["wins"])
    verdict = "apart: the interval excludes 0" if low > 0 or high < 0 else "not apart: the interval holds 0"
    return [f"{a} - {b}, Overall, on {row['pairs']} shared samples: {sign * float(row['difference']):+.3f} "
            f"[{low:+.3f}, {high:+.3f}] ({verdict}); {wins} wins / {row['ties']} ties / {losses} losses; "
            f"permutation p = {_number(row['p_permutation'], '.4f')}"]


def agreement_lines(report_dir: Path) -> List[str]:
    """The pooled agreement of the reward model with the rule judge, and their system-level scores, per split."""
    lines = []
    for split in ("in-test", "out-test"):
        rows = {r["metric"]: r for r in _csv_rows(report_dir / f"agreement_{split}.csv")}
        pooled = rows.get("all metrics")
        if pooled is None:
            continue
        figures = ", ".join(f"{label} {_number(pooled[name])} [{_number(pooled[name + '_low'])}, "
                            f"{_number(pooled[name + '_high'])}]" for name, label in
                            (("spearman", "Spearman"), ("kendall", "Kendall"), ("pearson", "Pearson"), ("mae", "MAE")))
        lines.append(f"{split}: {pooled['pairs']} review pairs: {figures}; same winner "
                     f"{_number(pooled['winner_agreement'])}")
    return lines


def _table(report_dir: Path) -> str:
    path = report_dir / "table5.md"
    return path.read_text(encoding="utf-8").rstrip() if path.is_file() else f"(no {path})"


def report_text(summaries: Sequence[ModelSummary], report_dir, judge_report_dir=None) -> str:
    """The closing text. JUDGE_REPORT_DIR: eval/report.py's output over the rule judge's reviews of the same answers
    (the stand-in for GPT-4's Table 5), shown first: it tells the agents apart by its stated rules, whatever the
    briefly trained reward model learned."""
    report_dir = Path(report_dir)
    models = [s.model for s in summaries]
    lines = ["", "=" * 78]
    if judge_report_dir is not None:
        judge_report_dir = Path(judge_report_dir)
        lines += ["MMRole demo: Table 5 by the rule-based judge (the stand-in for GPT-4; scores relative to the "
                  "ground truth)", "", _table(judge_report_dir), "", *comparison_lines(judge_report_dir, models), ""]
    lines += ["MMRole demo: Table 5 by the trained reward model (eval/RM_review.py)", "", _table(report_dir), "",
              *comparison_lines(report_dir, models), "",
              "The reward model against the rule-based judge on the test answers of both agents (reviews it never "
              "saw; RM_agreement, 95% bootstrap intervals):", *[f"  {line}" for line in agreement_lines(report_dir)],
              "",
              "(A tiny random model trained for minutes on templated data: the numbers show that every stage runs and "
              "how", " far a reward model gets in that budget, not how good a real agent or judge is.)", ""]
    for s in summaries:
        lines.append(f"{s.model}: reward-model reviews that parse into a score pair: {s.parsed}/{s.reviews} "
                     f"({100 * s.parse_rate:.1f}%)")
        lines.append(f"{s.model}: answers that open with the character's catchphrase: {s.catchphrases}/{s.answers}"
                     + (f" ({100 * s.catchphrases / s.answers:.1f}%)" if s.answers else ""))
    for s in summaries:
        if s.example:
            turn = s.example["conversations"][1]
            lines += ["", f"Example of {s.model} ({s.example['id']}, {s.example['role']}):",
                      f"  ground truth: {turn['value']}", f"  answer:       {turn.get('answer')}"]
    lines += ["", f"Radar chart: {report_dir / 'radar.png'}", f"Dimension chart: {report_dir / 'dimensions.png'}",
              f"Ranking and comparisons: {report_dir / 'ranking.md'}; judge audit: {report_dir / 'audit.md'}"]
    if judge_report_dir is not None:
        lines.append(f"The rule judge's report and charts: {judge_report_dir}/")
    lines.append("=" * 78)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m mmrole.demo.summary", description=__doc__)
    parser.add_argument("--eval_dir", required=True, help="holds {in,out}-test_answers/ and {in,out}-test_reviews/")
    parser.add_argument("--report_dir", required=True, help="eval/report.py's --output_dir")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--judge_report_dir", default=None,
                        help="eval/report.py's --output_dir over the rule judge's reviews of the same answers")
    parser.add_argument("--output_file", default=None, help="also write the figures to this JSON file")
    add_hidden_alias(parser, "--json", of="--output_file")
    args = parser.parse_args(argv)
    summaries = [summarise(args.eval_dir, model) for model in args.models]
    print(report_text(summaries, args.report_dir, args.judge_report_dir))
    if args.output_file:
        figures = {s.model: {"reviews": s.reviews, "parsed": s.parsed, "parse_rate": s.parse_rate,
                             "answers": s.answers, "catchphrase_answers": s.catchphrases} for s in summaries}
        atomic_write_json(args.output_file, figures, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
