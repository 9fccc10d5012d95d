"""What demo.sh prints at the end: the Table 5 of the run, how many reward-model reviews parse, how often the
agent speaks like its character, an example answer, and where the charts are.

    python -m mmrole.demo.summary --eval_dir demo_output/eval --report_dir demo_output/report --models demo-agent

Parse rate = reviews whose text yielded a score pair (the pair RM_review stored, parsed by
mmrole.common.metrics.parse_score_pair) / reviews asked, over every reviews file of the model. Catchphrase
rate = answers that open with the answering character's catchphrase (every ground-truth reply of the
demo data does).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from ..common.cli import ArgumentParser, add_hidden_alias
from ..common.store import atomic_write_json
from ..eval.files import REVIEW_KEY, input_files, load_json_list, score_pair_of
from ..eval.report import SPLITS
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


def report_text(summaries: Sequence[ModelSummary], report_dir) -> str:
    report_dir = Path(report_dir)
    table = (report_dir / "table5.md").read_text(encoding="utf-8") if (report_dir / "table5.md").is_file() else ""
    lines = ["", "=" * 78, "MMRole demo: Table 5 of this run (reward-model scores relative to the ground truth)", "",
             table.rstrip(), "",
             "(A tiny random model trained for minutes on templated data: the numbers show that every stage runs,",
             " not how good an agent is; a briefly trained reward model learns the review format before it learns",
             " to tell answers apart.)", ""]
    for s in summaries:
        lines.append(f"{s.model}: reward-model reviews that parse into a score pair: {s.parsed}/{s.reviews} "
                     f"({100 * s.parse_rate:.1f}%)")
        lines.append(f"{s.model}: answers that open with the character's catchphrase: {s.catchphrases}/{s.answers}"
                     + (f" ({100 * s.catchphrases / s.answers:.1f}%)" if s.answers else ""))
    example = next((s.example for s in summaries if s.example), None)
    if example:
        turn = example["conversations"][1]
        lines += ["", f"Example ({example['id']}, {example['role']}):", f"  ground truth: {turn['value']}",
                  f"  agent answer: {turn.get('answer')}"]
    lines += ["", f"Radar chart: {report_dir / 'radar.png'}", f"Dimension chart: {report_dir / 'dimensions.png'}",
              "=" * 78]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m mmrole.demo.summary", description=__doc__)
    parser.add_argument("--eval_dir", required=True, help="holds {in,out}-test_answers/ and {in,out}-test_reviews/")
    parser.add_argument("--report_dir", required=True, help="eval/report.py's --output_dir")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--output_file", default=None, help="also write the figures to this JSON file")
    add_hidden_alias(parser, "--json", of="--output_file")
    args = parser.parse_args(argv)
    summaries = [summarise(args.eval_dir, model) for model in args.models]
    print(report_text(summaries, args.report_dir))
    if args.output_file:
        figures = {s.model: {"reviews": s.reviews, "parsed": s.parsed, "parse_rate": s.parse_rate,
                             "answers": s.answers, "catchphrase_answers": s.catchphrases} for s in summaries}
        atomic_write_json(args.output_file, figures, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
