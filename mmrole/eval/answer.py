"""MRPA inference: the answer of a role-playing model for every test sample, resumable.

As the original inference.py: one request per sample, the role-play system prompt, the query
`[{'image': os.path.join(image_dir, image)}, {'text': prompt}]` (Qwen-VL renders it with
`from_list_format`, so the path string is part of the prompt), no history. Output: the test file
with `conversations[1].answer` — the published answers schema. Each answer reaches the journal
the moment it is generated; the output files are written from the journals when the run is done.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Union

from ..backends.base import Backend, BackendError, ChatRequest, ChatResult, GenerationParams
from ..common.problems import Problem
from ..common.prompts import ROLEPLAY_SYSTEM
from ..common.store import PathLike, atomic_write_json
from .files import SchemaError, TestSample, image_problems, load_json_list, load_test_samples
from .run import ERROR_STATUS, FileSummary, ResultJournal, already_finished, open_result_journal, run_requests


def answer_request(sample: TestSample, image_dir: PathLike) -> ChatRequest:
    """The original's request: fixed role-play system prompt (not the record's `system` field,
    which the original ignored too), image first, then the prompt."""
    return ChatRequest.single(sample.question, image=sample.image_path(image_dir), system=ROLEPLAY_SYSTEM,
                              key=(sample.id,))


def _with_answer(record, answer: Union[str, None]):
    """The record with our answer; without any answer when we have none (a stale answer from
    another run must not pass for ours). Records too broken to hold one stay as they are."""
    conversations = record.get("conversations") if isinstance(record, dict) else None
    if not (isinstance(conversations, list) and len(conversations) > 1 and isinstance(conversations[1], dict)):
        return record
    record = copy.deepcopy(record)
    record["conversations"][1].pop("answer", None)
    if answer is not None:
        record["conversations"][1]["answer"] = answer
    return record


@dataclass
class _FileRun:
    """One test file in the middle of being answered: what it holds and the journal its answers go into."""

    input_path: Path
    output_path: Path
    summary: FileSummary
    records: list
    samples: List[TestSample]
    journal: ResultJournal
    todo: List[ChatRequest]

    def record(self, request: ChatRequest, result: Union[ChatResult, BackendError]) -> None:
        if isinstance(result, BackendError):
            self.journal.append({"id": request.key[0], "status": ERROR_STATUS, "error": str(result)})
        else:
            self.journal.append({"id": request.key[0], "status": "ok", "answer": result.text,
                                 "finish_reason": result.finish_reason})


def _start_file(input_path: Path, output_path: Path, backend: Backend, params: GenerationParams, image_dir: PathLike,
                redo_stale: bool) -> Union[FileSummary, _FileRun]:
    """The file's run, or its summary alone when there is nothing to run: finished earlier, unreadable, or a journal
    holding answers of other settings (refused unless redo_stale; see mmrole.eval.run.ResultJournal)."""
    summary = FileSummary(str(input_path), str(output_path))
    if already_finished(output_path):
        summary.notes.append("output exists without a journal: already finished, left as is (delete it to redo)")
        return summary
    try:
        records = load_json_list(input_path)
        samples, problems = load_test_samples(input_path, need_ground_truth=False)
    except SchemaError as e:
        summary.skipped.append(e.problem())
        return summary
    samples, unusable_images = image_problems(samples, image_dir, input_path)
    summary.samples, summary.skipped = len(records), problems + unusable_images
    requests = [answer_request(s, image_dir) for s in samples]
    journal = open_result_journal(output_path, ("id",), backend, params, requests, summary, redo_stale)
    if journal is None:
        return summary
    todo = [r for r in requests if (journal.get(r.key) or {}).get("status") != "ok"]
    return _FileRun(input_path, output_path, summary, records, samples, journal, todo)


def _finish_file(run: _FileRun) -> FileSummary:
    """Write the output file from the journal; samples without an answer are listed as failed."""
    summary, answers = run.summary, {}
    for sample in run.samples:
        entry = run.journal.get((sample.id,)) or {}
        if entry.get("status") == "ok":
            answers[sample.id] = entry
        else:
            summary.failed.append(Problem(str(run.input_path), sample.id,
                                          f"no answer: {entry.get('error', 'not run')}"))
    # By position, never by id: a second record with the same id must not get the first one's answer.
    answer_at = {sample.index: answers[sample.id]["answer"] for sample in run.samples if sample.id in answers}
    atomic_write_json(run.output_path,
                      [_with_answer(record, answer_at.get(index)) for index, record in enumerate(run.records)],
                      final_newline=False)
    summary.done = len(answers)
    _note_answers(summary, list(answers.values()))
    return summary


def _note_answers(summary: FileSummary, entries: List[dict]) -> None:
    empty = [e["id"] for e in entries if not e["answer"]]
    cut = [e["id"] for e in entries if e.get("finish_reason") == "length"]
    if empty:
        summary.notes.append(f"{len(empty)} empty answer(s) (review skips them by default): {', '.join(empty[:10])}")
    if cut:
        summary.notes.append(f"{len(cut)} answer(s) stopped at max_new_tokens")


def answer_files(
    inputs: Sequence[PathLike], output_dir: PathLike, backend: Backend, params: GenerationParams, image_dir: PathLike,
    *, progress: bool = True, redo_stale: bool = False,
) -> List[FileSummary]:
    """Answer every usable sample of the test files, each file into output_dir/<its name>; one summary per file.

    The requests of all files go to the backend as one stream, so that a batching backend refills the rows a file's
    last answers leave free with the next file's prompts instead of running them half empty at every file's end.
    Each answer still goes to its own file's journal the moment it is generated (a kill loses only the answers in
    flight), and each output file is written once all files' requests have been run."""
    started = [_start_file(Path(p), Path(output_dir) / Path(p).name, backend, params, image_dir, redo_stale)
               for p in inputs]
    runs = [item for item in started if isinstance(item, _FileRun)]
    owner = {id(request): run for run in runs for request in run.todo}
    requests = [request for run in runs for request in run.todo]
    desc = runs[0].input_path.name if len(runs) == 1 else f"{len(runs)} files"
    run_requests(backend, requests, params, lambda request, result: owner[id(request)].record(request, result),
                 desc=desc, progress=progress)
    return [_finish_file(item) if isinstance(item, _FileRun) else item for item in started]
