"""The engine behind the server (mmrole.serve): concurrent chat requests decode together with continuous batching,
in the same `DecodingBatch` (mmrole.qwen_vl.generation.continuous) that inference and review use.

One scheduler thread owns the model. Each turn of its loop
- admits waiting jobs, oldest first, into free rows of the decoding batch: their prompts are prefilled together,
  as `chat` prefills each (its own positions and NTK factor), with the pixels its request carried (the model never
  loads a path); a prompt prefix that a running row or another joiner holds for the same ids and images (a shared
  system prompt, a character's profile, the judge's eight prompts of a sample) is copied, not computed;
- runs one decoding step for all rows together, whatever their max_tokens, stop strings, streaming or
  sampling settings;
- answers the jobs whose rows ended.
A row ends on an end-of-reply token, at its own max_tokens, or when its `_RowText` says so: at one of its
stop strings (OpenAI semantics: string level, the stop string is not part of the reply) or when its client
went away. Streamed text is handed to the job's `deliver` callback as it grows.

Greedy rows get what a one-at-a-time `chat()` gives (each row keeps its own positions, NTK factor and log-n).
A sampled row draws with its own torch.Generator, seeded with the request's `seed`, so a seeded request gets
the same sample whatever else decodes beside it. The batch grows up to max_batch_size rows while requests
wait; when it is empty it is dropped (its key/value buffers freed), and when half its rows are empty and
nothing waits it shrinks (an empty row still costs compute in every step).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..backends.base import ChatRequest, GenerationParams

logger = logging.getLogger("mmrole.serve")

# Pieces of text that must not be streamed yet because a later token may change them.
_REPLACEMENT_CHAR = "\ufffd"  # an incomplete UTF-8 sequence at the end of the decoded ids
GENERATION_FAILED = "generation failed (see the server log)"


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


Event = Tuple[str, object]  # ("delta", text), ("done", Completion) or ("error", message)


@dataclass
class Job:
    """One chat request waiting for, or in, the decoding batch.

    request: the conversation, its images named by their span names. params: generation settings
    (params.stop holds the stop strings). context_tokens: the prompt ids (api.serving_context).
    images: uint8 RGB pixels [3, S, S] by span name, for every image span of context_tokens.
    stream: hand text deltas out as they are generated. deliver: receives every event (from the engine's
    thread); by default events go to the `events` queue.
    """

    request: ChatRequest
    params: GenerationParams
    context_tokens: Tuple[int, ...]
    images: Dict[str, torch.Tensor] = field(default_factory=dict)
    stream: bool = False
    deliver: Optional[Callable[[Event], None]] = None
    events: "queue.Queue[Event]" = field(default_factory=queue.Queue)
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    result: Optional[Completion] = None
    error: Optional[str] = None  # a message fit for the client (no internals)
    streamed_text: str = ""  # what has been sent as deltas so far

    def cancel(self) -> None:
        """The client went away: drop the job, or end its row at the next token."""
        self.cancelled.set()

    def drop(self) -> None:
        """The engine leaves a cancelled job unanswered."""
        self.done.set()

    def finish(self, result: Completion) -> None:
        if self.stream:
            if result.text.startswith(self.streamed_text):
                self._delta(result.text[len(self.streamed_text):])
            else:  # cannot happen by construction (see _RowText); never send text twice
                logger.warning("streamed text is not a prefix of the final reply; final delta dropped")
        self.result = result
        self._post(("done", result))
        self.done.set()

    def fail(self, message: str) -> None:
        self.error = message
        self._post(("error", message))
        self.done.set()

    def _delta(self, text: str) -> None:
        if text:
            self.streamed_text += text
            self._post(("delta", text))

    def _post(self, event: Event) -> None:
        if self.deliver is None:
            self.events.put(event)
        else:
            self.deliver(event)


class _RowText:
    """The reply of one batch row as it grows, decoded the way the final reply is decoded; its `add` is the
    row's on_token hook.

    The final reply (decode_tokens) is the generated text up to the first <|im_end|>/<|im_start|>
    (or <|endoftext|>), without the last token when none came (the original's quirk), stripped. So
    at every step the text that may already be streamed is: that text without the newest token,
    left-stripped, without trailing whitespace, without a trailing incomplete UTF-8 character and
    without a tail that could be the start of a stop string. Every streamed prefix is then a
    prefix of the final reply.
    """

    def __init__(self, job: Job, tokenizer, terminators: Sequence[int]):
        self.job = job
        self.terminators = set(terminators)
        self.ids: List[int] = []
        self.ended = False  # a terminator was generated: the text is final
        self.stopped_at: Optional[str] = None  # the reply cut before a stop string
        self._decoded = _GrowingDecode(tokenizer)
        self._previous = ""  # the text without the newest token

    def add(self, token: int) -> bool:
        """Record one new token; True when the row must end now (client gone or stop string)."""
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
        text, previous = self._decoded.text(self.ids), self._previous
        self._previous = text
        if stops:
            cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                self.stopped_at = text[:cut].strip()
                self._stream(text[:cut])
                return True
        if self.job.stream:
            self._stream(text if self.ended else previous)
        return False

    def _stream(self, visible: str) -> None:
        if not self.job.stream:
            return
        visible = visible.lstrip().rstrip(_REPLACEMENT_CHAR)
        visible = visible[: len(visible) - _stop_prefix_length(visible, self.job.params.stop)].rstrip()
        sent = self.job.streamed_text
        if len(visible) > len(sent) and visible.startswith(sent):
            self.job._delta(visible[len(sent):])


class _GrowingDecode:
    """tokenizer.decode(ids, errors="replace") of ids that only grow, without decoding them all at every token:
    the text of a prefix that ends on a whole character is kept, and only the ids after it are decoded (a
    split there cannot change the text). Ids holding an image tag are decoded whole (a later </img> changes
    how the earlier ids read)."""

    KEEP_EVERY = 8  # ids decoded again at most (plus an unfinished character)

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.kept_ids = 0
        self.kept_text = ""

    def text(self, ids: Sequence[int]) -> str:
        if self.tokenizer.img_start_id in ids:
            return self.tokenizer.decode(list(ids), errors="replace")
        tail = self.tokenizer.decode(list(ids[self.kept_ids:]), errors="replace")
        text = self.kept_text + tail
        if len(ids) - self.kept_ids >= self.KEEP_EVERY and not tail.endswith(_REPLACEMENT_CHAR):
            self.kept_ids, self.kept_text = len(ids), text
        return text


def _stop_prefix_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is the beginning of a stop string."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest


@dataclass
class _Admitted:
    """A job whose row is in the decoding batch."""

    job: Job
    prepared: object  # generation.PreparedChat
    text: _RowText


class ChatEngine:
    """Answers Jobs with continuous batching on one scheduler thread.

    backend: an HFBackend (its model, tokenizer and generation settings are used). max_batch_size: rows
    decoding together at most. max_queue: waiting jobs beyond this are refused (EngineOverloaded).

    `stats` (for logs, tests and bench/serve_load.py): rows (jobs admitted), decode_steps, decode_rows (rows
    summed over steps), largest_batch (most rows in one step), mixed_budget_steps (steps whose rows had
    different max_tokens), most_budgets_in_a_step, cancelled_rows and cancelled_row_tokens (rows ended because
    their client left, and the tokens they had), dropped_jobs (left before admission), failed_jobs.
    """

    def __init__(self, backend, *, max_batch_size: int = 8, max_queue: int = 256):
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1")
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mmrole-serve-engine", daemon=True)
        self.stats = {"rows": 0, "decode_steps": 0, "decode_rows": 0, "largest_batch": 0, "mixed_budget_steps": 0,
                      "most_budgets_in_a_step": 0, "cancelled_rows": 0, "cancelled_row_tokens": 0,
                      "dropped_jobs": 0, "failed_jobs": 0}
        generation_config = backend.model.generation_config
        eos = generation_config.eos_token_id
        self.pad_id = generation_config.pad_token_id if generation_config.pad_token_id is not None else eos
        tokenizer = backend.tokenizer
        self.terminators = [tokenizer.im_start_id, tokenizer.im_end_id] + ([eos] if isinstance(eos, int) else list(eos))
        self._batch = None  # continuous.DecodingBatch while rows decode
        self._admitted: Dict[int, _Admitted] = {}
        self._next_index = 0

    def check_settings(self) -> None:
        """ValueError when the checkpoint's generation config holds settings the engine does not implement
        (for greedy requests, or for sampled ones with the checkpoint's defaults)."""
        for params in (GenerationParams(greedy=True), GenerationParams(greedy=False)):
            self._prepare(Job(ChatRequest(query=(), system=""), params, (self.pad_id,)), on_token=None)

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
        """Stop taking jobs; fail what waits or decodes."""
        self._closed.set()
        self._queue.put(None)  # wake the scheduler
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._fail_waiting()

    # --- scheduler ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                first: List[Job] = []
                if not self._admitted:  # nothing decodes: wait for work
                    job = self._queue.get()
                    if job is None:
                        break
                    first.append(job)
                if self._admit_waiting(first) and self._admitted:
                    self._step()
        finally:
            for index in list(self._admitted):
                self._admitted.pop(index).job.fail("the server is shutting down")
            self._fail_waiting()

    def _admit_waiting(self, jobs: List[Job]) -> bool:
        """Admit `jobs` and the waiting jobs, oldest first, while rows are free (the batch grows up to
        max_batch_size), prefilled together (shared prompt prefixes computed once); False when the close sentinel
        came."""
        open_rows = self.max_batch_size - len(self._admitted)
        closing = False
        while len(jobs) < open_rows:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                closing = True
                break
            jobs.append(job)
        if jobs:
            self._admit(jobs)
        return not closing

    def _admit(self, jobs: List[Job]) -> None:
        joining: Dict[int, _Admitted] = {}
        for job in jobs:
            if job.cancelled.is_set():
                self.stats["dropped_jobs"] += 1
                job.drop()
                continue
            text = _RowText(job, self.backend.tokenizer, self.terminators)
            index, self._next_index = self._next_index, self._next_index + 1
            try:
                joining[index] = _Admitted(job, self._prepare(job, on_token=text.add), text)
            except Exception:  # noqa: BLE001  the request was validated: this is the server's fault
                self._fail_unprefilled(job, None)
        if not joining:
            return
        batch = self._batch_with_room(len(joining))
        assignments = [(slot, index, admitted.prepared.task)
                       for slot, (index, admitted) in zip(batch.free_slots(), joining.items())]
        try:
            with torch.inference_mode():
                failures = dict(batch.admit_all(assignments))
        except Exception:  # noqa: BLE001  the shared prefill failed: none of these rows can start
            failures = {index: None for index in joining}
        for index, admitted in joining.items():
            if index in failures:
                self._fail_unprefilled(admitted.job, failures[index])
            else:
                self._admitted[index] = admitted
                self.stats["rows"] += 1

    def _fail_unprefilled(self, job: Job, error: Optional[Exception]) -> None:
        """A job whose prompt could not be prefilled (error: what admit_all reported; None: the exception being
        handled)."""
        logger.error("a request could not be prefilled", exc_info=error if error is not None else True)
        self.stats["failed_jobs"] += 1
        job.fail(GENERATION_FAILED)

    def _prepare(self, job: Job, on_token):
        from ..qwen_vl.generation.chat import prepare_chat
        from ..qwen_vl.image_processing_qwen import normalise_rgb

        backend = self.backend
        kwargs = backend.generation_kwargs(replace(job.params, stop=()))  # stop strings: per row, by _RowText
        images = {name: normalise_rgb(rgb).to(backend.model.device) for name, rgb in job.images.items()}
        return prepare_chat(backend.model, backend.tokenizer, job.context_tokens, images=images,
                            seed=job.params.seed, on_token=on_token, **kwargs)

    def _batch_with_room(self, rows: int):
        """The decoding batch with at least `rows` free slots (created, or grown, as needed)."""
        from ..qwen_vl.generation.continuous import DecodingBatch

        if self._batch is None:
            slots = min(self.max_batch_size, max(rows, len(self._admitted) + rows + self._queue.qsize()))
            self._batch = DecodingBatch(self.backend.model, slots, self.pad_id)
        missing = rows - len(self._batch.free_slots())
        if missing > 0:
            self._batch.add_slots(missing)
        return self._batch

    def _step(self) -> None:
        batch = self._batch
        budgets = {task.max_new_tokens for task in batch.tasks()}
        stats = self.stats
        stats["decode_steps"] += 1
        stats["decode_rows"] += batch.live
        stats["largest_batch"] = max(stats["largest_batch"], batch.live)
        stats["mixed_budget_steps"] += len(budgets) > 1
        stats["most_budgets_in_a_step"] = max(stats["most_budgets_in_a_step"], len(budgets))
        try:
            with torch.inference_mode():
                ended = batch.step()
        except Exception:  # noqa: BLE001  the shared step failed: its rows cannot go on
            logger.exception("a decoding step of %d rows failed", batch.live)
            for index in list(self._admitted):
                stats["failed_jobs"] += 1
                self._admitted.pop(index).job.fail(GENERATION_FAILED)
            self._batch = None
            return
        for index, generated in ended:
            self._finish(self._admitted.pop(index), generated)
        if not self._admitted:
            self._batch = None  # frees the key/value buffers
        elif self._queue.empty():
            batch.shrink()

    def _finish(self, admitted: _Admitted, generated: List[int]) -> None:
        job, text = admitted.job, admitted.text
        if job.cancelled.is_set():
            self.stats["cancelled_rows"] += 1
            self.stats["cancelled_row_tokens"] += len(generated)
            job.drop()
            return
        if text.stopped_at is not None:
            completion = Completion(text.stopped_at, "stop", len(job.context_tokens), len(text.ids))
        else:
            generation = admitted.prepared.generation(self.backend.tokenizer, generated)
            completion = Completion(generation.response, generation.finish_reason, generation.prompt_tokens,
                                    generation.completion_tokens)
        job.finish(completion)

    def _fail_waiting(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.fail("the server is shutting down")
