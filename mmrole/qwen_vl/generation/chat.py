"""Chat generation for Qwen-VL-Chat: the original `chat` / `chat_stream`, and `batch_chat` for many chats at once.

Settings come from the checkpoint's generation_config.json (chat_format, max_window_size, max_new_tokens,
top_p, top_k, do_sample, ...) unless a `generation_config` or keyword arguments override them, as the original.
The stop words of chatml are `<|im_end|>` and `<|im_start|>`: once a row has generated one, the next step is
forced to `<|endoftext|>` (score 2**15), and generation of that row ends there.

`batch_chat` with greedy decoding uses continuous batching (see continuous.py beside this module): the queries that
join at one step are prefilled together, a prompt prefix another row holds is copied (prefill.py), every query decodes
in a shared batch of at most batch_size rows and leaves it when it ends, its place going to the next query.
Otherwise (sampling, or settings only transformers' `generate` implements) it left-pads the prompts of
each batch into one `generate` call (the scripts' sampling: a seed set per batch, as the original).

`prepare_chat` turns one prompt into a task for a `DecodingBatch` that a caller drives itself (the server):
greedy or sampled (temperature, top_k, top_p, with the request's own torch.Generator), with the pixels of the
prompt's images carried by the task. Either way the model takes rotary positions, the dynamic-NTK factor and
log-n per row from the row's own length (see modeling_qwen), so every row gets exactly what a one-at-a-time
`chat` gives it (up to float rounding of batched matrix products).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from queue import Queue
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedModel, StoppingCriteria,
                          StoppingCriteriaList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
from transformers.generation.streamers import BaseStreamer

from ..chat_format import decode_tokens, get_stop_words_ids, make_context
from .continuous import (FORCED_EOS_SCORE, DecodeTask, ends_with_stop_word, generate_greedy, image_run_key,
                         same_image_runs)

DEFAULT_SYSTEM = "You are a helpful assistant."
# Generation-config fields the continuous-batching path honours, or that greedy decoding does not read. A config
# setting anything else (repetition_penalty, min_new_tokens, bad_words_ids, output_scores, ...) is answered by
# transformers' `generate`, which implements them.
CONTINUOUS_CONFIG_FIELDS = frozenset({
    "max_new_tokens", "max_length", "do_sample", "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p",
    "epsilon_cutoff", "eta_cutoff", "pad_token_id", "bos_token_id", "eos_token_id", "use_cache", "chat_format",
    "max_window_size", "stop_words_ids", "transformers_version", "return_dict_in_generate",
})
# Sampling settings that only sampled rows read; `prepare_chat` samples with the first three (as `generate`
# orders them) and leaves the others to `generate`.
SAMPLING_FIELDS_HONOURED = frozenset({"temperature", "top_k", "top_p"})
SAMPLING_FIELDS_NOT_HONOURED = frozenset({"min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff"})

History = List[Tuple[str, str]]


class StopWordsLogitsProcessor(LogitsProcessor):
    """After a row's ids end with any of the stop-word sequences, give the eos token(s) a score of 2**15, so
    the next token ends the row. Other scores are left alone, as the original."""

    def __init__(self, stop_words_ids: Iterable[Sequence[int]], eos_token_id: Union[int, Sequence[int]]):
        self.stop_words_ids = [list(seq) for seq in stop_words_ids]
        if not self.stop_words_ids or any(not seq for seq in self.stop_words_ids):
            raise ValueError(f"stop_words_ids must be non-empty lists of token ids, got {self.stop_words_ids}")
        if any(not isinstance(tok, int) or tok < 0 for seq in self.stop_words_ids for tok in seq):
            raise ValueError(f"stop_words_ids must hold non-negative ints, got {self.stop_words_ids}")
        self.eos_token_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """input_ids: [B, L]; scores: [B, V] (modified in place and returned)."""
        stopped = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
        for seq in self.stop_words_ids:
            if len(seq) <= input_ids.size(1):
                tail = torch.tensor(seq, device=input_ids.device)
                stopped |= (input_ids[:, -len(seq) :] == tail).all(dim=-1)
        if stopped.any():
            for eos in self.eos_token_ids:
                scores[stopped, eos] = FORCED_EOS_SCORE
        return scores


def add_stop_words_processor(
    logits_processor: Optional[LogitsProcessorList],
    stop_words_ids: Optional[Sequence[Sequence[int]]],
    eos_token_id: Union[int, Sequence[int], None],
) -> Optional[LogitsProcessorList]:
    """The processor list `generate` should use: the given one plus the stop-word processor (if any stop words)."""
    if not stop_words_ids:
        return logits_processor
    if eos_token_id is None:
        raise ValueError("stop words need an eos_token_id in the generation config")
    processors = LogitsProcessorList(logits_processor or [])
    processors.append(StopWordsLogitsProcessor(stop_words_ids, eos_token_id))
    return processors


@dataclass
class ChatGeneration:
    """One answered chat. `generated_ids` are the new tokens up to and including the final stop/eos token;
    `finish_reason` is "stop" (an eos token was generated) or "length" (max_new_tokens reached)."""

    response: str
    generated_ids: List[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _ChatSetup:
    """config: the checkpoint's (or given) generation config with the keyword overrides applied;
    kwargs: the remaining keywords, passed to `generate` as model inputs."""

    config: GenerationConfig
    max_window_size: int
    stop_words_ids: List[List[int]]
    kwargs: dict


def _setup(model, tokenizer, generation_config, stop_words_ids, kwargs) -> _ChatSetup:
    config = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
    chat_format = getattr(config, "chat_format", None)
    if chat_format != "chatml":
        raise ValueError(
            f"chat needs a generation config with chat_format 'chatml' (a Qwen-VL-Chat checkpoint), got {chat_format!r}"
        )
    kwargs = dict(kwargs)
    max_window_size = kwargs.pop("max_window_size", None) or config.max_window_size
    if not kwargs.get("do_sample", config.do_sample):
        # Greedy ignores the checkpoint's sampling settings. Reset them to transformers' neutral values (None
        # would be refilled from the checkpoint) so that it does not warn about unused flags on every call.
        config.top_p, config.top_k, config.temperature = 1.0, 50, 1.0
    model_kwargs = config.update(**kwargs)  # generation settings go into the config, the rest to the model
    config.return_dict_in_generate = False  # the chat functions read plain id tensors
    stops = [list(seq) for seq in (stop_words_ids or [])] + get_stop_words_ids(chat_format, tokenizer)
    return _ChatSetup(config, max_window_size, stops, model_kwargs)


def _context(tokenizer, query: str, history, system: str, setup: _ChatSetup) -> Tuple[str, List[int]]:
    return make_context(
        tokenizer,
        query,
        history=history or [],
        system=system,
        max_window_size=setup.max_window_size,
        chat_format=setup.config.chat_format,
    )


def _decode(tokenizer, tokens: Sequence[int], raw_text: str, context_length: int, setup: _ChatSetup) -> str:
    return decode_tokens(
        tokens,
        tokenizer,
        raw_text_len=len(raw_text),
        context_length=context_length,
        chat_format=setup.config.chat_format,
        verbose=False,
        errors="replace",
    )


def chat(
    model: PreTrainedModel,
    tokenizer,
    query: str,
    history: Optional[History] = None,
    system: str = DEFAULT_SYSTEM,
    append_history: bool = True,
    stop_words_ids: Optional[List[List[int]]] = None,
    generation_config: Optional[GenerationConfig] = None,
    **kwargs: Any,
) -> Tuple[str, History]:
    """Answer one query (a string; use `tokenizer.from_list_format` for images) after `history`.

    Returns (response, history). As the original, the (query, response) turn is appended to the given history
    list (a new list when history is None). kwargs override generation settings (e.g. do_sample=False,
    max_new_tokens=64, max_window_size=...)."""
    setup = _setup(model, tokenizer, generation_config, stop_words_ids, kwargs)
    history = [] if history is None else history
    raw_text, context_tokens = _context(tokenizer, query, history, system, setup)
    input_ids = torch.tensor([context_tokens], device=model.device)
    outputs = model.generate(
        input_ids, stop_words_ids=setup.stop_words_ids, generation_config=setup.config, **setup.kwargs
    )
    response = _decode(tokenizer, outputs[0].tolist(), raw_text, len(context_tokens), setup)
    if append_history:
        history.append((query, response))
    return response, history


class _QueueStreamer(BaseStreamer):
    """Receives the new token ids from `generate` (the first call, the prompt, is skipped) into a queue."""

    def __init__(self):
        self.queue: "Queue[Optional[List[int]]]" = Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)


class _StopWhenSet(StoppingCriteria):
    """Stops generation once the consumer of a stream has gone away."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.size(0),), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def chat_stream(
    model: PreTrainedModel,
    tokenizer,
    query: str,
    history: Optional[History] = None,
    system: str = DEFAULT_SYSTEM,
    stop_words_ids: Optional[List[List[int]]] = None,
    logits_processor: Optional[LogitsProcessorList] = None,
    generation_config: Optional[GenerationConfig] = None,
    **kwargs: Any,
) -> Iterator[str]:
    """Like `chat`, but returns an iterator over the growing response (all generated tokens so far, decoded
    without special tokens), one item per generated token, as the original. `generate` runs in a worker
    thread feeding a transformers streamer; closing the iterator early stops generation."""
    setup = _setup(model, tokenizer, generation_config, stop_words_ids, kwargs)
    _, context_tokens = _context(tokenizer, query, history, system, setup)
    input_ids = torch.tensor([context_tokens], device=model.device)
    streamer = _QueueStreamer()
    cancelled = threading.Event()
    errors: List[BaseException] = []

    def run() -> None:
        try:
            model.generate(
                input_ids,
                stop_words_ids=setup.stop_words_ids,
                logits_processor=logits_processor,
                stopping_criteria=StoppingCriteriaList([_StopWhenSet(cancelled)]),
                generation_config=setup.config,
                streamer=streamer,
                **setup.kwargs,
            )
        except BaseException as err:  # re-raised in the consumer's thread
            errors.append(err)
        finally:
            streamer.end()

    def stream() -> Iterator[str]:
        worker = threading.Thread(target=run, name="qwen-chat-stream", daemon=True)
        worker.start()
        generated: List[int] = []
        try:
            while (new_ids := streamer.queue.get()) is not None:
                generated.extend(new_ids)
                yield tokenizer.decode(generated, skip_special_tokens=True, errors="ignore", keep_image_special=True)
        finally:
            cancelled.set()
            worker.join()
        if errors:
            raise errors[0]

    return stream()


def _eos_ids(setup: _ChatSetup) -> List[int]:
    eos = setup.config.eos_token_id
    if eos is None:
        raise ValueError("batched chat needs an eos_token_id in the generation config")
    return [eos] if isinstance(eos, int) else list(eos)


def _generation(tokenizer, context: Tuple[str, List[int]], new_ids: List[int], setup: _ChatSetup) -> ChatGeneration:
    """A row's result from its new ids (trailing pads after the eos allowed). A stop word as the very last token
    (max_new_tokens hit before the forced eos) still means "stop"."""
    raw_text, context_tokens = context
    eos_ids = set(_eos_ids(setup))
    end = next((k + 1 for k, tok in enumerate(new_ids) if tok in eos_ids), None)
    kept = new_ids if end is None else new_ids[:end]
    return ChatGeneration(
        response=_decode(tokenizer, context_tokens + kept, raw_text, len(context_tokens), setup),
        generated_ids=kept,
        finish_reason="stop" if end is not None or ends_with_stop_word(kept, setup.stop_words_ids) else "length",
        prompt_tokens=len(context_tokens),
        completion_tokens=len(kept),
    )


def _unsupported_settings(setup: _ChatSetup) -> List[str]:
    """What keeps these settings off the continuous path: model keywords, settings outside
    CONTINUOUS_CONFIG_FIELDS, sampling settings it does not honour, no positive max_new_tokens."""
    config = setup.config
    fields = set(config.to_diff_dict())
    unsupported = (fields - CONTINUOUS_CONFIG_FIELDS) | set(setup.kwargs)
    if config.do_sample:
        unsupported |= fields & SAMPLING_FIELDS_NOT_HONOURED
    if not isinstance(config.max_new_tokens, int) or config.max_new_tokens < 1:
        unsupported.add("max_new_tokens")
    return sorted(unsupported)


def _continuous_applies(setup: _ChatSetup, sampling: bool = False) -> bool:
    """Whether the continuous path answers with these settings: greedy (or, with `sampling`, sampled with
    temperature/top_k/top_p), nothing in `_unsupported_settings`."""
    return (sampling or not setup.config.do_sample) and not _unsupported_settings(setup)


def sampling_warpers(config: GenerationConfig) -> LogitsProcessorList:
    """The processors `generate` samples a row with under this config (temperature, top-k, top-p, in its order)."""
    warpers = LogitsProcessorList()
    if config.temperature is not None and config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k is not None and config.top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
    if config.top_p is not None and config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    return warpers


def continuous_batching_applies(
    model, tokenizer, generation_config: Optional[GenerationConfig] = None, stop_words_ids=None,
    make_logits_processor=None, **kwargs: Any
) -> bool:
    """Whether `batch_chat_detailed` with these arguments decodes with continuous batching: greedy, no
    logits_processor/stopping_criteria/streamer keywords, no setting outside CONTINUOUS_CONFIG_FIELDS."""
    return _continuous_applies(_setup(model, tokenizer, generation_config, stop_words_ids, kwargs))


def _continuous_results(
    model, tokenizer, contexts: Sequence[Union[Tuple[str, List[int]], Exception]], setup: _ChatSetup,
    batch_size: int, make_logits_processor: Optional[Callable[[], LogitsProcessorList]], stats: Optional[dict] = None,
) -> Iterator[Tuple[int, Union[ChatGeneration, Exception]]]:
    """(query index, result or the OSError/ValueError of that query) as queries end; contexts that are
    exceptions already (the prompt could not be built) are yielded first. Queries are admitted in runs of
    consecutive queries showing the same images, longest prompt first."""
    eos_ids = _eos_ids(setup)
    pad_id = setup.config.pad_token_id if setup.config.pad_token_id is not None else eos_ids[0]
    built = []
    for index, context in enumerate(contexts):
        if isinstance(context, Exception):
            yield index, context
        else:
            built.append(index)
    prompts = [contexts[index][1] for index in built]
    runs = same_image_runs([image_run_key(model, ids) for ids in prompts], [len(ids) for ids in prompts])
    query_of_task = [built[position] for run in runs for position in run]
    tasks = [DecodeTask(contexts[index][1], setup.config.max_new_tokens, eos_ids, setup.stop_words_ids,
                        make_logits_processor() if make_logits_processor is not None else None)
             for index in query_of_task]
    for task_index, outcome in generate_greedy(model, tasks, batch_size, pad_id, stats=stats):
        index = query_of_task[task_index]
        yield index, outcome if isinstance(outcome, Exception) else _generation(tokenizer, contexts[index], outcome, setup)


def _per_query(queries, histories, systems) -> Tuple[List[Optional[History]], List[str]]:
    count = len(queries)
    histories = list(histories) if histories is not None else [None] * count
    systems = [systems] * count if isinstance(systems, str) else list(systems)
    if len(histories) != count or len(systems) != count:
        raise ValueError(f"got {count} queries, {len(histories)} histories and {len(systems)} systems")
    return histories, systems


def iter_batch_chat_detailed(
    model: PreTrainedModel,
    tokenizer,
    queries: Sequence[str],
    histories: Optional[Sequence[Optional[History]]] = None,
    systems: Union[str, Sequence[str]] = DEFAULT_SYSTEM,
    generation_config: Optional[GenerationConfig] = None,
    stop_words_ids: Optional[List[List[int]]] = None,
    batch_size: Optional[int] = None,
    make_logits_processor: Optional[Callable[[], LogitsProcessorList]] = None,
    stats: Optional[dict] = None,
    **kwargs: Any,
) -> Iterator[Tuple[int, Union[ChatGeneration, Exception]]]:
    """Continuous-batching greedy chats, yielded as (query index, ChatGeneration) as each ends; a query whose
    prompt cannot be built or prefilled (an unreadable image, a malformed image tag) yields its OSError or
    ValueError instead and the others go on. Consecutive queries that show the same images are a run that shares
    one image encoding; runs are admitted longest prompt first. Arguments as `batch_chat_detailed`; raises
    ValueError for settings that need the `generate` path (see `continuous_batching_applies`). `stats` (a dict)
    receives the run's counters as `generate_greedy` gives them (prompt, prefill, reused and padding tokens,
    prefill forwards, decoding steps)."""
    histories, systems = _per_query(queries, histories, systems)
    setup = _setup(model, tokenizer, generation_config, stop_words_ids, kwargs)
    if not _continuous_applies(setup):
        raise ValueError("iter_batch_chat_detailed needs greedy decoding without settings only `generate` "
                         "implements (see continuous_batching_applies)")
    contexts: List[Union[Tuple[str, List[int]], Exception]] = []
    for query, history, system in zip(queries, histories, systems):
        try:
            contexts.append(_context(tokenizer, query, history, system, setup))
        except (OSError, ValueError) as error:
            contexts.append(error)
    return _continuous_results(model, tokenizer, contexts, setup, batch_size or max(len(queries), 1),
                               make_logits_processor, stats)


@dataclass
class PreparedChat:
    """One prompt as a task for a `DecodingBatch` (continuous.py), and how its generated ids become the
    ChatGeneration that `chat` would report for them."""

    task: DecodeTask
    setup: _ChatSetup
    prompt_text: str  # the decoded prompt ids, cut off the decoded reply as `chat` cuts its raw_text

    def generation(self, tokenizer, generated_ids: Sequence[int]) -> ChatGeneration:
        context = (self.prompt_text, list(self.task.context_tokens))
        return _generation(tokenizer, context, list(generated_ids), self.setup)


def prepare_chat(
    model: PreTrainedModel,
    tokenizer,
    context_tokens: Sequence[int],
    *,
    images: Optional[Mapping[str, torch.Tensor]] = None,
    seed: Optional[int] = None,
    on_token: Optional[Callable[[int], bool]] = None,
    generation_config: Optional[GenerationConfig] = None,
    **kwargs: Any,
) -> PreparedChat:
    """A chat prompt's ids (make_context) as a task for a DecodingBatch, under the checkpoint's generation config
    with keyword overrides (do_sample, max_new_tokens, temperature, top_p, ...), as `chat` takes them.

    Greedy rows choose what `chat` chooses. Sampled rows draw with a torch.Generator of their own, seeded with
    `seed` (None: an unpredictable seed), after the warpers `generate` would use; so a seeded prompt gets the same
    sample whatever else decodes beside it. images/on_token: see DecodeTask. Raises ValueError for settings this
    path does not implement (see `_continuous_applies`)."""
    setup = _setup(model, tokenizer, generation_config, None, kwargs)
    unsupported = _unsupported_settings(setup)
    if unsupported:
        raise ValueError(f"continuous batching does not implement these generation settings: {unsupported}")
    sampler, warpers = None, None
    if setup.config.do_sample:
        sampler = torch.Generator(device=model.get_output_embeddings().weight.device)  # where the scores are
        if seed is None:
            sampler.seed()
        else:
            sampler.manual_seed(seed)
        warpers = sampling_warpers(setup.config) or None
    task = DecodeTask(list(context_tokens), setup.config.max_new_tokens, _eos_ids(setup), setup.stop_words_ids,
                      warpers, images=images, sampler=sampler, on_token=on_token)
    return PreparedChat(task, setup, tokenizer.decode(list(context_tokens), errors="replace"))


def _generate_left_padded(model, contexts: List[List[int]], pad_id: int, setup: _ChatSetup) -> List[List[int]]:
    """Generate for prompts of different lengths at once; returns each row's new ids (trailing pads kept)."""
    width = max(len(ids) for ids in contexts)
    input_ids = torch.full((len(contexts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for row, ids in enumerate(contexts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    outputs = model.generate(
        input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        stop_words_ids=setup.stop_words_ids,
        generation_config=setup.config,
        **setup.kwargs,
    )
    return [row[width:] for row in outputs.tolist()]


def batch_chat_detailed(
    model: PreTrainedModel,
    tokenizer,
    queries: Sequence[str],
    histories: Optional[Sequence[Optional[History]]] = None,
    systems: Union[str, Sequence[str]] = DEFAULT_SYSTEM,
    generation_config: Optional[GenerationConfig] = None,
    stop_words_ids: Optional[List[List[int]]] = None,
    batch_size: Optional[int] = None,
    make_logits_processor: Optional[Callable[[], LogitsProcessorList]] = None,
    **kwargs: Any,
) -> List[ChatGeneration]:
    """Answer many (query, history, system) at once; one ChatGeneration per query, in order.

    histories: one history (or None) per query; systems: one system prompt for all, or one per query.
    batch_size: at most this many rows at a time (None: all queries at once).
    Greedy decoding uses continuous batching (`iter_batch_chat_detailed`): a row that ends is replaced by the
    next query at once. make_logits_processor (greedy only): a function returning fresh logits processors for
    each query, which see that query's ids alone, as `chat(..., logits_processor=...)` would.
    Sampling, logits_processor/stopping_criteria/streamer keywords and settings only `generate` implements use
    left-padded `generate` calls of batch_size prompts (grouped by length to limit padding).
    With greedy decoding every answer equals what `chat` gives for that query alone."""
    histories, systems = _per_query(queries, histories, systems)
    count = len(queries)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    setup = _setup(model, tokenizer, generation_config, stop_words_ids, kwargs)
    contexts = [_context(tokenizer, q, h, s, setup) for q, h, s in zip(queries, histories, systems)]
    results: List[Optional[ChatGeneration]] = [None] * count
    if _continuous_applies(setup):
        outcomes = _continuous_results(model, tokenizer, contexts, setup, batch_size or max(count, 1),
                                       make_logits_processor)
        for index, outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
            results[index] = outcome
        return results  # type: ignore[return-value]
    if make_logits_processor is not None:
        raise ValueError("make_logits_processor works with greedy continuous batching only "
                         "(see continuous_batching_applies)")
    pad_id = setup.config.pad_token_id if setup.config.pad_token_id is not None else _eos_ids(setup)[0]
    order = sorted(range(count), key=lambda i: len(contexts[i][1]))
    step = batch_size or max(count, 1)
    for start in range(0, count, step):
        chunk = order[start : start + step]
        generated = _generate_left_padded(model, [contexts[i][1] for i in chunk], pad_id, setup)
        for index, new_ids in zip(chunk, generated):
            results[index] = _generation(tokenizer, contexts[index], new_ids, setup)
    return results  # type: ignore[return-value]


def batch_chat(
    model: PreTrainedModel,
    tokenizer,
    queries: Sequence[str],
    histories: Optional[Sequence[Optional[History]]] = None,
    systems: Union[str, Sequence[str]] = DEFAULT_SYSTEM,
    generation_config: Optional[GenerationConfig] = None,
    **kwargs: Any,
) -> List[str]:
    """The responses of `batch_chat_detailed`, in query order."""
    return [
        result.response
        for result in batch_chat_detailed(model, tokenizer, queries, histories, systems, generation_config, **kwargs)
    ]
