"""A run of inference or review: the journal beside each output, the run settings its entries record, sending
requests through a backend with a progress bar, and what each input file's run did (FileSummary, printed at the
end; its exit status).

Each output file `OUT/<name>.json` has a journal `OUT/<name>.journal.jsonl` (mmrole.common.store.Journal)
that receives every finished item at once. The output itself is written atomically from the input
and the journal when the file is done, so a rerun after a kill resumes from the journal and
produces the same file as an uninterrupted run.

Every journal entry records what made it (`ResultJournal`): the run settings (backend and model,
dtype, generation settings that change the result) and a digest of the request. A rerun reuses
an entry only when both still hold. An entry whose request changed (edited answers, another
--image_dir) is redone and counted in the summary. Entries made with other settings make the run
refuse the file with a message naming the journal; --redo_stale redoes them instead. Why refuse:
the usual cause is an --output_dir reused by mistake, and silently redoing would throw away
another model's finished results.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ..backends.base import Backend, BackendError, ChatRequest, ChatResult, GenerationParams
from ..common.cli import EXIT_INCOMPLETE, EXIT_OK, EXIT_UNUSABLE, worst_status
from ..common.problems import Problem
from ..common.progress import progress_bar
from ..common.store import CorruptJournal, Journal, PathLike

JOURNAL_SUFFIX = ".journal.jsonl"  # not *.json: RM_result and review read every *.json in a folder


def journal_path(output_path: PathLike) -> Path:
    output_path = Path(output_path)
    return output_path.with_name(output_path.stem + JOURNAL_SUFFIX)


def run_settings(backend: Backend, params: GenerationParams) -> Dict[str, Any]:
    """What decides a result besides the request: the model and the generation settings. Greedy
    decoding ignores temperature, top_p and seed, so they do not count then; nor does a seed the backend
    does not send (an openai backend without --seed)."""
    settings = dict(backend.identity())
    generation = asdict(params)
    generation["stop"] = list(params.stop)
    unused = ("temperature", "top_p", "seed") if params.greedy else () if backend.uses_seed() else ("seed",)
    for name in unused:
        generation.pop(name)
    settings.update(generation)
    return settings


RUN_FIELD, INPUT_FIELD = "run", "input"  # the journal fields ResultJournal adds to every entry
ERROR_STATUS = "error"  # an entry without a result: always asked again, never a reason to refuse


class ResultJournal:
    """A Journal whose entries count only for the run settings and the request that made them.

    input_hashes: {key: Backend.request_digest(request)} of every item of the current input. get()
    returns None for an entry made for another request or with other settings (so it is redone);
    append() stamps both on the entry; records() yields current entries only.
    """

    def __init__(self, path: PathLike, key_fields: Tuple[str, ...], run: Mapping[str, Any],
                 input_hashes: Mapping[Tuple[Hashable, ...], str]):
        self.journal = Journal(path, key_fields)
        self.run = dict(run)
        self.input_hashes = dict(input_hashes)
        self.changed_input: List[Tuple[Hashable, ...]] = []  # results for a request that has changed since
        self.other_run: List[dict] = []  # results made with other settings (or unrecorded ones)
        for key, hash_ in self.input_hashes.items():
            entry = self.journal.get(key)
            if entry is None or entry.get("status") == ERROR_STATUS:
                continue
            if entry.get(RUN_FIELD) != self.run:
                self.other_run.append(entry)
            elif entry.get(INPUT_FIELD) != hash_:
                self.changed_input.append(key)

    def _current(self, entry: Optional[dict]) -> bool:
        return (entry is not None and entry.get(RUN_FIELD) == self.run
                and entry.get(INPUT_FIELD) == self.input_hashes.get(self.journal.key_of(entry)))

    def get(self, key: Tuple[Hashable, ...]) -> Optional[dict]:
        entry = self.journal.get(key)
        return entry if self._current(entry) else None

    def records(self) -> Iterator[dict]:
        return (entry for entry in self.journal.records() if self._current(entry))

    def append(self, record: dict) -> None:
        key = self.journal.key_of(record)
        self.journal.append({**record, RUN_FIELD: self.run, INPUT_FIELD: self.input_hashes[key]})

    def refusal(self) -> Optional[Problem]:
        """The whole-file problem to report when entries of other settings would be redone."""
        if not self.other_run:
            return None
        difference = _settings_difference(self.other_run[0].get(RUN_FIELD), self.run)
        return Problem(str(self.journal.path), "*",
                       f"{len(self.other_run)} result(s) here were made with other settings ({difference}); not mixing "
                       "them with this run's. Use another --output_dir, or --redo_stale to redo them with this run's "
                       "settings", whole_file=True)

    def notes(self, redo_stale: bool) -> List[str]:
        notes = []
        if self.changed_input:
            notes.append(f"{len(self.changed_input)} journal result(s) redone: their request changed since "
                         f"(e.g. edited answers or another --image_dir): "
                         + ", ".join(str(key) for key in self.changed_input[:5]))
        if redo_stale and self.other_run:
            notes.append(f"{len(self.other_run)} journal result(s) of other settings redone (--redo_stale)")
        return notes


def open_result_journal(
    output_path: PathLike, key_fields: Tuple[str, ...], backend: Backend, params: GenerationParams,
    requests: Sequence[ChatRequest], summary: "FileSummary", redo_stale: bool,
) -> Optional[ResultJournal]:
    """The ResultJournal of an output file for these requests (keyed by request.key), or None when it holds
    results of other settings and redo_stale is off, or a damaged line: then the refusal is in
    summary.skipped; otherwise the journal's notes are in summary.notes."""
    try:
        journal = ResultJournal(journal_path(output_path), key_fields, run_settings(backend, params),
                                {r.key: backend.request_digest(r) for r in requests})
    except CorruptJournal as e:
        summary.skipped.append(Problem(e.path, "*", e.reason, whole_file=True))
        return None
    refusal = journal.refusal()
    if refusal and not redo_stale:
        summary.skipped.append(refusal)
        return None
    summary.notes += journal.notes(redo_stale)
    return journal


def _settings_difference(old: Optional[Mapping[str, Any]], new: Mapping[str, Any]) -> str:
    if not isinstance(old, Mapping):
        return "settings not recorded in the journal"
    changed = [f"{name} {old.get(name)!r} -> now {new.get(name)!r}" for name in sorted(set(old) | set(new))
               if old.get(name) != new.get(name)]
    return "; ".join(changed)


def already_finished(output_path: PathLike) -> bool:
    """An output without a journal was finished by an earlier run (or by hand): leave it alone."""
    return Path(output_path).exists() and not journal_path(output_path).exists()


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
    skipped: List[Problem] = field(default_factory=list)  # bad input, reported and skipped (and deliberate skips)
    failed: List[Problem] = field(default_factory=list)  # backend errors, parse failures
    notes: List[str] = field(default_factory=list)

    @property
    def unusable(self) -> bool:
        """The file could not be worked on at all (see Problem.whole_file)."""
        return any(problem.whole_file for problem in self.skipped)

    @property
    def status(self) -> int:
        """Exit status for this file (mmrole.common.cli): 1 unusable, 3 items not done (bad input skipped or
        failed; deliberate skips such as empty answers do not count), else 0."""
        if self.unusable:
            return EXIT_UNUSABLE
        if self.failed or any(not problem.deliberate for problem in self.skipped):
            return EXIT_INCOMPLETE
        return EXIT_OK

    def print(self, stream=None) -> None:
        from ..common.problems import print_problems

        stream = stream or sys.stderr
        print(f"{self.input_path} -> {self.output_path}: {self.done}/{self.samples} samples done", file=stream)
        for note in self.notes:
            print(f"  {note}", file=stream)
        print_problems([p for p in self.skipped if not p.deliberate], "  skipped", stream)
        print_problems([p for p in self.skipped if p.deliberate], "  left out (as the original)", stream)
        print_problems(self.failed, "  failed", stream)


def print_summaries(summaries: Sequence[FileSummary], stream=None) -> None:
    stream = stream or sys.stderr
    print("=== summary ===", file=stream)
    for summary in summaries:
        summary.print(stream)
    skipped = sum(not p.deliberate for s in summaries for p in s.skipped)
    left_out = sum(p.deliberate for s in summaries for p in s.skipped)
    failed = sum(len(s.failed) for s in summaries)
    unusable = sum(s.unusable for s in summaries)
    print(f"total: {sum(s.done for s in summaries)} samples done, {skipped} skipped, {failed} failed"
          + (f", {left_out} left out as the original" if left_out else "")
          + (f"; {unusable} file(s) not processed" if unusable else ""), file=stream)
    if worst_status(*(s.status for s in summaries)) == EXIT_INCOMPLETE:
        print("not everything was done (exit status 3): a rerun redoes the failed items; fix the skipped inputs "
              "first", file=stream)


def seeded(params: GenerationParams, seed: Optional[int]) -> GenerationParams:
    """Sampling params for a retry: the same settings, sampling on, a fixed seed per attempt."""
    return replace(params, greedy=False, seed=seed)
