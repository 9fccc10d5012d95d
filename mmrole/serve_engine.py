"""The batching engine behind mmrole.serve: concurrent chat requests become batched `generate` calls.

One scheduler thread owns the model. It takes the first waiting job, collects more for a short
window (`batch_wait`, up to `max_batch_size`), groups them by generation settings (greedy or
sampling, temperature, top_p, max_new_tokens, seed: one `generate` call can only use one setting)
and answers each group with one `batch_chat_detailed` call. That function left-pads the prompts
and gives every row its one-at-a-time result (per-row positions, NTK factor and log-n), so greedy
answers do not depend on what else was in the batch.

During generation a stopping criterion sees every new token of every row. It
- maps batch rows to jobs by their prompt tokens (independent of the row order the batch uses),
- streams each row's new text to its job (for `stream: true` requests),
- stops a row whose client went away, or whose text reached one of its `stop` strings (OpenAI
  semantics: string level, the stop string is not part of the reply; rows may have different stops).

A failing batch is retried job by job, so one bad request cannot fail the others.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .backends.base import ChatRequest, GenerationParams

logger = logging.getLogger("mmrole.serve")

# Pieces of text that must not be streamed yet because a later token may change them.
_REPLACEMENT_CHAR = "\ufffd"  # an incomplete UTF-8 sequence at the end of the decoded ids


class EngineOverloaded(RuntimeError):
    """More jobs are waiting than the engine accepts (the server answers 503)."""


class EngineClosed(RuntimeError):
    """The engine is shutting down."""


@dataclass
class Completion:
    """The answer to one job."""

    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Job:
    """One chat request waiting for, or in, a batch.

    request: the conversation (Qwen-VL list-format parts; image paths are local files that exist
    until the job is done). params: generation settings; params.stop holds the stop strings.
    context_tokens: the prompt ids (make_context of the request), used to find the job's batch row.
    stream: put text deltas on `events` as they are generated.
    """

    request: ChatRequest
    params: GenerationParams
    context_tokens: Tuple[int, ...]
    stream: bool = False
    on_leave: Optional[Callable[[], None]] = None  # called once when the engine is done with the job
    events: "queue.Queue[Tuple[str, object]]" = field(default_factory=queue.Queue)
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    result: Optional[Completion] = None
    error: Optional[str] = None  # a message fit for the client (no internals)
    streamed_text: str = ""  # what has been sent as deltas so far

    def cancel(self) -> None:
        """The client went away: drop the job, or stop its row at the next token."""
        self.cancelled.set()

    def drop(self) -> None:
        """The engine leaves a cancelled job unanswered."""
        self.done.set()
        self._leave()

    def finish(self, result: Completion) -> None:
        if self.stream:
            if result.text.startswith(self.streamed_text):
                self._delta(result.text[len(self.streamed_text):])
            else:  # cannot happen by construction (see _RowText); never send text twice
                logger.warning("streamed text is not a prefix of the final reply; final delta dropped")
        self.result = result
        self._leave()  # resources go before the answer: a client that has its reply finds them released
        self.events.put(("done", result))
        self.done.set()

    def fail(self, message: str) -> None:
        self.error = message
        self._leave()
        self.events.put(("error", message))
        self.done.set()

    def _leave(self) -> None:
        callback, self.on_leave = self.on_leave, None
        if callback is not None:
            callback()

    def _delta(self, text: str) -> None:
        if text:
            self.streamed_text += text
            self.events.put(("delta", text))


def group_key(params: GenerationParams) -> GenerationParams:
    """Jobs whose keys are equal can share one `generate` call (stop strings are handled per row)."""
    return replace(params, stop=())


class _RowText:
    """The reply of one batch row as it grows, decoded the way the final reply is decoded.

    The final reply (decode_tokens) is the generated text up to the first <|im_end|>/<|im_start|>
    (or <|endoftext|>), without the last token when none came (the original's quirk), stripped. So
    at every step the text that may already be streamed is: that text without the newest token,
    left-stripped, without trailing whitespace, without a trailing incomplete UTF-8 character and
    without a tail that could be the start of a stop string. Every streamed prefix is then a
    prefix of the final reply.
    """

    def __init__(self, job: Job, tokenizer, terminators: Sequence[int]):
        self.job = job
        self.tokenizer = tokenizer
        self.terminators = set(terminators)
        self.ids: List[int] = []
        self.ended = False  # a terminator was generated: the text is final
        self.stopped_at: Optional[str] = None  # the reply cut before a stop string

    def add(self, token: int) -> bool:
        """Record one new token; True when the row must stop now (client gone or stop string)."""
        if self.ended or self.stopped_at is not None:
            return True
        if self.job.cancelled.is_set():
            return True
        if token in self.terminators:
            self.ended = True
        else:
            self.ids.append(token)
        stops = self.job.params.stop
        if not (stops or self.job.stream):
            return False
        text = self._decode(self.ids)
        if stops:
            cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                self.stopped_at = text[:cut].strip()
                self._stream(text[:cut])
                return True
        if self.job.stream:
            self._stream(text if self.ended else self._decode(self.ids[:-1]))
        return False

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), errors="replace")

    def _stream(self, visible: str) -> None:
        if not self.job.stream:
            return
        visible = visible.lstrip().rstrip(_REPLACEMENT_CHAR)
        visible = visible[: len(visible) - _stop_prefix_length(visible, self.job.params.stop)].rstrip()
        sent = self.job.streamed_text
        if len(visible) > len(sent) and visible.startswith(sent):
            self.job._delta(visible[len(sent):])


def _stop_prefix_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is the beginning of a stop string."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest


class _BatchObserver(StoppingCriteria):
    """Called by `generate` after every step with input_ids [B, prompt width + steps so far]."""

    def __init__(self, jobs: Sequence[Job], tokenizer, pad_id: int, terminators: Sequence[int]):
        self.jobs = list(jobs)
        self.rows: Optional[List[_RowText]] = None
        self.texts = [_RowText(job, tokenizer, terminators) for job in jobs]
        self.pad_id = pad_id

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if self.rows is None:
            self.rows = self._map_rows(input_ids[:, :-1].tolist())
        newest = input_ids[:, -1].tolist()
        stop = [row.add(token) for row, token in zip(self.rows, newest)]
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)

    def _map_rows(self, prompts: List[List[int]]) -> List[_RowText]:
        """Each (left-padded) prompt row -> the text tracker of the job with that prompt."""
        waiting: Dict[Tuple[int, ...], List[_RowText]] = {}
        for job, text in zip(self.jobs, self.texts):
            waiting.setdefault(job.context_tokens, []).append(text)
        rows = []
        for prompt in prompts:
            start = next((i for i, token in enumerate(prompt) if token != self.pad_id), len(prompt))
            candidates = waiting.get(tuple(prompt[start:]))
            if not candidates:
                raise RuntimeError("a batch row matches no job's prompt")
            rows.append(candidates.pop(0))
        return rows

    def text_of(self, job_index: int) -> _RowText:
        return self.texts[job_index]


class ChatEngine:
    """Answers Jobs in batches on one scheduler thread.

    backend: an HFBackend (its model, tokenizer, rendering and generation settings are used).
    max_batch_size: rows per `generate` call. batch_wait: seconds to wait for more jobs after the
    first one arrives. max_queue: waiting jobs beyond this are refused (EngineOverloaded).
    """

    def __init__(self, backend, *, max_batch_size: int = 8, batch_wait: float = 0.01, max_queue: int = 256):
        if max_batch_size < 1 or max_queue < 1 or batch_wait < 0:
            raise ValueError("max_batch_size and max_queue must be at least 1, batch_wait not negative")
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        self.max_queue = max_queue
        self._queue: "queue.Queue[Job]" = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mmrole-serve-engine", daemon=True)
        # Statistics for logs and tests: batches run, rows answered, the largest batch, rows stopped
        # because their client left (and the tokens they had generated), jobs dropped before a batch.
        self.stats = {"batches": 0, "rows": 0, "largest_batch": 0, "cancelled_rows": 0, "cancelled_row_tokens": 0,
                      "dropped_jobs": 0}
        generation_config = backend.model.generation_config
        eos = generation_config.eos_token_id
        self.pad_id = generation_config.pad_token_id if generation_config.pad_token_id is not None else eos
        tokenizer = backend.tokenizer
        self.terminators = [tokenizer.im_start_id, tokenizer.im_end_id] + ([eos] if isinstance(eos, int) else list(eos))

    def start(self) -> "ChatEngine":
        self._thread.start()
        return self

    def submit(self, job: Job) -> Job:
        if self._closed.is_set():
            raise EngineClosed("the server is shutting down")
        if self._queue.qsize() >= self.max_queue:
            raise EngineOverloaded(f"more than {self.max_queue} requests are waiting")
        self._queue.put(job)
        return job

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs, finish the batch in flight, fail what still waits."""
        self._closed.set()
        self._queue.put(None)  # wake the scheduler
        if self._thread.is_alive():
            self._thread.join(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.fail("the server is shutting down")

    # --- scheduler ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            jobs = self._collect()
            groups: Dict[GenerationParams, List[Job]] = {}
            for job in jobs:
                groups.setdefault(group_key(job.params), []).append(job)
            for group in groups.values():
                self._answer(group)

    def _collect(self) -> List[Job]:
        """The first waiting job plus those that arrive within the batch window (live ones only)."""
        first = self._queue.get()
        if first is None:
            return []
        jobs = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(jobs) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                break
            jobs.append(job)
        return self._live(jobs)

    def _live(self, jobs: List[Job]) -> List[Job]:
        """The jobs whose client is still there; the others are dropped."""
        live = []
        for job in jobs:
            if job.cancelled.is_set():
                self.stats["dropped_jobs"] += 1
                job.drop()
            else:
                live.append(job)
        return live

    def _answer(self, jobs: List[Job]) -> None:
        jobs = self._live(jobs)
        if not jobs:
            return
        try:
            self._generate(jobs)
        except Exception:  # noqa: BLE001  one bad request must not fail the batch: retry alone
            logger.exception("a batch of %d failed", len(jobs))
            if len(jobs) == 1:
                jobs[0].fail("generation failed (see the server log)")
                return
            for job in jobs:
                if job.streamed_text:  # text already sent: a rerun would send it twice
                    job.fail("generation failed (see the server log)")
                elif not job.done.is_set():
                    self._answer([job])

    def _generate(self, jobs: List[Job]) -> None:
        from .qwen_vl.generation import batch_chat_detailed

        backend = self.backend
        params = jobs[0].params
        rendered = [backend.render(job.request) for job in jobs]
        observer = _BatchObserver(jobs, backend.tokenizer, self.pad_id, self.terminators)
        if not params.greedy and params.seed is not None:
            torch.manual_seed(params.seed)  # as HFBackend: sampling repeatable per batch
        started = time.monotonic()
        with torch.inference_mode():
            generations = batch_chat_detailed(
                backend.model, backend.tokenizer, [q for q, _ in rendered], [h for _, h in rendered],
                [job.request.system for job in jobs], batch_size=None,
                stopping_criteria=StoppingCriteriaList([observer]), **backend.generation_kwargs(group_key(params)))
        self.stats["batches"] += 1
        self.stats["rows"] += len(jobs)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        logger.info("batch of %d answered in %.2fs", len(jobs), time.monotonic() - started)
        for index, (job, generation) in enumerate(zip(jobs, generations)):
            text = observer.text_of(index)
            if job.cancelled.is_set():
                self.stats["cancelled_rows"] += 1
                self.stats["cancelled_row_tokens"] += len(text.ids)
                job.drop()
                continue
            if text.stopped_at is not None:
                completion = Completion(text.stopped_at, "stop", generation.prompt_tokens, len(text.ids))
            else:
                completion = Completion(generation.response, generation.finish_reason, generation.prompt_tokens,
                                        generation.completion_tokens)
            job.finish(completion)
