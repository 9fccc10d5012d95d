"""What inference and review share: files to process, journals beside the outputs, running
requests through a backend with a progress bar, and writing outputs as the original did.

Each output file `OUT/<name>.json` has a journal `OUT/<name>.journal.jsonl` (mmrole.store.Journal)
that receives every finished item at once. The output itself is written atomically from the input
and the journal when the file is done, so a rerun after a kill resumes from the journal and
produces the same file as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from .backends.base import Backend, BackendError, ChatRequest, ChatResult, GenerationParams
from .schema import Problem, TestSample
from .store import atomic_write_text

PathLike = Union[str, os.PathLike]
JOURNAL_SUFFIX = ".journal.jsonl"  # not *.json: RM_result and review read every *.json in a folder


def journal_path(output_path: PathLike) -> Path:
    output_path = Path(output_path)
    return output_path.with_name(output_path.stem + JOURNAL_SUFFIX)


def write_samples_json(path: PathLike, samples: Sequence[Any]) -> None:
    """As the original scripts wrote answers and reviews: UTF-8, indent 4, no trailing newline."""
    atomic_write_text(path, json.dumps(list(samples), ensure_ascii=False, indent=4))


def already_finished(output_path: PathLike) -> bool:
    """An output without a journal was finished by an earlier run (or by hand): leave it alone."""
    return Path(output_path).exists() and not journal_path(output_path).exists()


def missing_image_problems(
    samples: Sequence[TestSample], image_dir: PathLike, path: PathLike
) -> Tuple[List[TestSample], List[Problem]]:
    """Split samples into those whose image exists and a Problem for each missing image."""
    kept, problems = [], []
    for sample in samples:
        if os.path.isfile(sample.image_path(image_dir)):
            kept.append(sample)
        else:
            problems.append(Problem(str(path), sample.id, f"image not found: {sample.image_path(image_dir)}"))
    return kept, problems


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr with rate and ETA (tqdm's default format shows both)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="req", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def run_requests(
    backend: Backend,
    requests: Sequence[ChatRequest],
    params: GenerationParams,
    on_result: Callable[[ChatRequest, Union[ChatResult, BackendError]], None],
    *,
    desc: str,
    progress: bool = True,
) -> None:
    """Send requests, hand each result (or error) to on_result the moment it arrives."""
    if not requests:
        return
    with progress_bar(len(requests), desc, progress) as bar:
        for index, result in backend.generate_iter(list(requests), params):
            on_result(requests[index], result)
            bar.update(1)


@dataclass
class FileSummary:
    """What happened to one input file; printed at the end of every run."""

    input_path: str
    output_path: str
    samples: int = 0
    done: int = 0
    skipped: List[Problem] = field(default_factory=list)  # bad input, reported and skipped
    failed: List[Problem] = field(default_factory=list)  # backend errors, parse failures
    notes: List[str] = field(default_factory=list)

    @property
    def unusable(self) -> bool:
        """The file could not be worked on at all (see Problem.whole_file)."""
        return any(problem.whole_file for problem in self.skipped)

    def print(self, stream=None) -> None:
        from .schema import print_problems

        stream = stream or sys.stderr
        print(f"{self.input_path} -> {self.output_path}: {self.done}/{self.samples} samples done", file=stream)
        for note in self.notes:
            print(f"  {note}", file=stream)
        print_problems(self.skipped, "  skipped", stream)
        print_problems(self.failed, "  failed", stream)


def print_summaries(summaries: Sequence[FileSummary], stream=None) -> None:
    stream = stream or sys.stderr
    print("=== summary ===", file=stream)
    for summary in summaries:
        summary.print(stream)
    skipped = sum(len(s.skipped) for s in summaries)
    failed = sum(len(s.failed) for s in summaries)
    unusable = sum(s.unusable for s in summaries)
    print(f"total: {sum(s.done for s in summaries)} samples done, {skipped} skipped, {failed} failed"
          + (f"; {unusable} file(s) not processed" if unusable else ""), file=stream)


def seeded(params: GenerationParams, seed: Optional[int]) -> GenerationParams:
    """Sampling params for a retry: the same settings, sampling on, a fixed seed per attempt."""
    return replace(params, greedy=False, seed=seed)
