"""What every script reports at its end: the items it skipped or could not do, each with file and sample id.

A `Problem` is a record that was reported and skipped (or a review that could not be scored, a sample left out of
training...); `print_problems` lists them on stderr, the summary every script ends with.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Problem:
    """A record that was reported and skipped (or a review that could not be scored); with
    whole_file, a file that could not be used at all (the other files go on; scripts exit non-zero).
    deliberate: a skip the method itself makes (an empty answer is not reviewed, as the original):
    listed, but the run and its results are still complete."""

    path: str
    sample_id: str
    message: str
    metric: Optional[str] = None
    whole_file: bool = False
    deliberate: bool = False

    def __str__(self) -> str:
        if self.whole_file:
            sample = f" (sample {self.sample_id})" if self.sample_id != "*" else ""
            return f"{self.path}: file skipped{sample}: {self.message}"
        metric = f" [{self.metric}]" if self.metric else ""
        return f"{self.path}: sample {self.sample_id}{metric}: {self.message}"


def print_problems(problems: Sequence[Problem], title: str, stream=None, limit: int = 50) -> None:
    """List reported-and-skipped items (the summary every script ends with) on stderr."""
    stream = stream or sys.stderr
    if not problems:
        return
    print(f"{title}: {len(problems)}", file=stream)
    for problem in problems[:limit]:
        print(f"  - {problem}", file=stream)
    if len(problems) > limit:
        print(f"  ... and {len(problems) - limit} more", file=stream)
