"""The `hf` backend: a local Qwen-VL-Chat-format checkpoint (full or LoRA), batched.

Every request is rendered as the original scripts did: the query parts through
`tokenizer.from_list_format` (an image becomes `Picture 1: <img>PATH</img>\n`, so the path string
is part of the prompt tokens), the request's system prompt, history turns likewise.

Greedy requests (--no_random) are decoded with continuous batching (`iter_batch_chat_detailed`): at
most `batch_size` rows decode at once, and a request that ends leaves the batch at once and the next
one takes its place, so the decoding steps are about the tokens generated / batch_size instead of
the longest answer of every batch. Each result is yielded as soon as it ends. The requests that join
at one step are prefilled together, and a prompt prefix that another row holds (the 8 judge requests
of a sample share all but their aspect sentence, 16 with --swap) is copied, not computed
(mmrole/qwen_vl/generation/prefill.py); consecutive requests that show the same images share one
image encoding. `stats` sums the counters of these runs (prompt, prefill, reused and padding tokens,
prefill forwards, decoding steps): what bench/ prints.

Sampled requests go in static batches of up to `batch_size` through `batch_chat_detailed` (left
padding; per row positions, NTK and log-n; the seed is set per batch, so sampling is repeatable).
Batches are cut between runs of requests that show the same images, never inside one unless the
run alone is larger than batch_size: each image is then encoded once per sample and round (the
model encodes each distinct image path once per forward pass). A batch_size that is a multiple of
8 fills batches with whole samples.

Either way, when the requests fill more than one batch, runs are taken longest prompt first, so
rows decoding together have similar lengths and little of every step is spent on padding
(results are yielded with their index; greedy answers do not depend on the batch).

Generation settings are the checkpoint's generation_config.json (as the original) unless
GenerationParams overrides them: greedy -> do_sample=False; max_new_tokens, temperature, top_p,
stop strings and the sampling seed when given.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from .base import Backend, BackendError, ChatRequest, ChatResult, GenerationParams

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(name: Union[str, torch.dtype, None]) -> Optional[torch.dtype]:
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


class HFBackend(Backend):
    """model_path/use_lora/device/dtype go to `load_model_and_tokenizer`; or pass a loaded
    (model, tokenizer). batch_size: requests per generate call."""

    name = "hf"

    def __init__(
        self,
        model_path: Optional[Union[str, os.PathLike]] = None,
        *,
        use_lora: bool = False,
        device: Optional[str] = None,
        dtype: Union[str, torch.dtype, None] = None,
        batch_size: int = 8,
        model: Any = None,
        tokenizer: Any = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if model is None:
            from ..qwen_vl.loading import load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(model_path, use_lora=use_lora, device=device, dtype=_dtype(dtype))
            self._model_name = os.path.abspath(model_path)
        else:
            self._model_name = getattr(model, "name_or_path", None) or type(model).__name__
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.stats: Dict[str, int] = {}  # continuous-batching counters, summed over runs (see the module doc)

    def identity(self) -> Dict[str, Any]:
        # The weights' folder (adapter folder for LoRA) and dtype: bf16 and fp32 answers differ.
        return {"backend": self.name, "model": self._model_name, "dtype": str(next(self.model.parameters()).dtype)}

    def render(self, request: ChatRequest) -> Tuple[str, List[Tuple[str, str]]]:
        """(query text, history) exactly as the original scripts gave them to `model.chat`."""
        query = self.tokenizer.from_list_format(list(request.query))
        history = [(self.tokenizer.from_list_format(list(turn)), reply) for turn, reply in request.history]
        return query, history

    def prompt_length(self, request: ChatRequest) -> int:
        """Tokens of the rendered query and history (the system prompt is the same for a whole run)."""
        query, history = self.render(request)
        return len(self.tokenizer.encode(query)) + sum(len(self.tokenizer.encode(q + r)) for q, r in history)

    def generation_kwargs(self, params: GenerationParams) -> Dict[str, Any]:
        """Overrides of the checkpoint's generation config; empty = the checkpoint's settings."""
        kwargs: Dict[str, Any] = {}
        if params.greedy:
            kwargs["do_sample"] = False
        else:
            if params.temperature is not None:
                kwargs["temperature"] = params.temperature
            if params.top_p is not None:
                kwargs["top_p"] = params.top_p
        if params.max_new_tokens is not None:
            kwargs["max_new_tokens"] = params.max_new_tokens
        if params.stop:
            kwargs["stop_words_ids"] = [self.tokenizer.encode(s) for s in params.stop]
        return kwargs

    def generate_iter(
        self, requests: Sequence[ChatRequest], params: GenerationParams
    ) -> Iterator[Tuple[int, Union[ChatResult, BackendError]]]:
        from ..qwen_vl.generation.chat import continuous_batching_applies

        kwargs = self.generation_kwargs(params)
        if params.greedy and continuous_batching_applies(self.model, self.tokenizer, **kwargs):
            yield from self._answer_continuously(requests, kwargs)
            return
        lengths = [self.prompt_length(r) for r in requests] if len(requests) > self.batch_size else None
        for indexes in batches_of_whole_runs(requests, self.batch_size, lengths):
            chunk = [requests[i] for i in indexes]
            if not params.greedy and params.seed is not None:
                torch.manual_seed(params.seed)  # sampling repeatable per batch
            try:
                results: List[Union[ChatResult, BackendError]] = list(self._answer(chunk, kwargs))
            except (OSError, ValueError) as e:  # e.g. an unreadable image: redo this batch row by row
                results = [self._answer_alone(r, kwargs) for r in chunk] if len(chunk) > 1 else [_error(chunk[0], e)]
            yield from zip(indexes, results)

    def _answer_continuously(
        self, requests: Sequence[ChatRequest], kwargs: Dict[str, Any]
    ) -> Iterator[Tuple[int, Union[ChatResult, BackendError]]]:
        """Greedy requests, yielded as each ends (runs of the same images, longest prompt first); a request
        that cannot be rendered or prefilled (e.g. an unreadable image) yields its error, the others go on."""
        from ..qwen_vl.generation.chat import iter_batch_chat_detailed

        admitted, rendered = [], []
        for index in range(len(requests)):
            try:
                rendered.append(self.render(requests[index]))
                admitted.append(index)
            except (OSError, ValueError) as e:
                yield index, _error(requests[index], e)
        run_stats: Dict[str, int] = {}
        outcomes = iter_batch_chat_detailed(
            self.model, self.tokenizer, [q for q, _ in rendered], [h for _, h in rendered],
            [requests[i].system for i in admitted], batch_size=self.batch_size, stats=run_stats, **kwargs)
        try:
            for position, outcome in outcomes:
                index = admitted[position]
                yield index, _error(requests[index], outcome) if isinstance(outcome, Exception) else _result(outcome)
        finally:
            for name, count in run_stats.items():
                self.stats[name] = self.stats.get(name, 0) + count

    def _answer(self, chunk: Sequence[ChatRequest], kwargs: Dict[str, Any]) -> List[ChatResult]:
        from ..qwen_vl.generation.chat import batch_chat_detailed

        rendered = [self.render(r) for r in chunk]
        with torch.inference_mode():
            generations = batch_chat_detailed(
                self.model, self.tokenizer, [q for q, _ in rendered], [h for _, h in rendered],
                [r.system for r in chunk], batch_size=None, **kwargs)
        return [_result(g) for g in generations]

    def _answer_alone(self, request: ChatRequest, kwargs: Dict[str, Any]) -> Union[ChatResult, BackendError]:
        try:
            return self._answer([request], kwargs)[0]
        except (OSError, ValueError) as e:
            return _error(request, e)


def batches_of_whole_runs(
    requests: Sequence[ChatRequest], batch_size: int, lengths: Optional[Sequence[int]] = None
) -> List[List[int]]:
    """Request indexes per batch: at most batch_size each, a run of consecutive requests with the
    same images kept in one batch unless the run alone exceeds batch_size (then it fills whole
    batches and its rest opens the next). Runs in the given order, or, with the prompt lengths,
    longest run first (a stable sort: equal lengths keep their order)."""
    from ..qwen_vl.generation.continuous import same_image_runs

    runs = same_image_runs([request.images() for request in requests], lengths)
    batches: List[List[int]] = []
    current: List[int] = []
    for run in runs:
        if current and len(current) + len(run) > batch_size:
            batches.append(current)
            current = []
        while len(run) > batch_size:
            batches.append(run[:batch_size])
            run = run[batch_size:]
        current += run
    if current:
        batches.append(current)
    return batches


def _result(generation) -> ChatResult:
    return ChatResult(text=generation.response, finish_reason=generation.finish_reason,
                      prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens)


def _error(request: ChatRequest, error: Exception) -> BackendError:
    return BackendError(f"{type(error).__name__}: {error}", key=request.key)
