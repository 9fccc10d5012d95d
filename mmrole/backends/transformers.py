"""The `transformers` backend: any local image-text-to-text checkpoint (Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision,
InternVL, ...) through `AutoModelForImageTextToText` + `AutoProcessor` and the checkpoint's own chat template.

A request becomes chat messages (system, history turns, the query), its parts in order: an image is an `image`
content part, text a `text` part. The checkpoint's chat template renders them (with the generation prompt), the
processor loads its own image handling (resizing, patching, the image tokens it expands the placeholder to), and
requests are generated in batches of `batch_size` with left padding, longest prompt first, so rows decoding
together have similar lengths. Greedy answers equal one-at-a-time `generate` (tested on a tiny Qwen2.5-VL).

Generation settings are the checkpoint's generation_config.json unless GenerationParams overrides them (greedy ->
do_sample=False, otherwise do_sample=True with the checkpoint's temperature/top_p/top_k; max_new_tokens,
temperature, top_p, stop strings, the sampling seed per batch); a checkpoint that
sets no max_new_tokens gets DEFAULT_MAX_NEW_TOKENS (transformers' own default, 20 tokens in all, is no answer).
bfloat16 on a GPU that supports it (else float16), float32 on CPU. Loading is local only: a missing folder is an
error, never a hub download, and a downloaded folder's own code is never run (no trust_remote_code).

One bad request never stops the others: an image the processor rejects (or that cannot be read), a prompt the
chat template cannot render, or a prompt longer than the model's context is that request's BackendError, whose
message names the checkpoint (and the image); the rest of its batch is answered row by row. A checkpoint that is
not an image-text-to-text model or has no chat template is a CheckpointError at load time.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from .base import Backend, BackendError, ChatRequest, ChatResult, GenerationParams, Part, file_digest

# Qwen-VL-Chat's released generation_config.json caps answers at 512 tokens: the published MMRole answers and
# reviews were made with it.
DEFAULT_MAX_NEW_TOKENS = 512


class CheckpointError(ValueError):
    """The folder cannot be used by this backend (the message names it and says why)."""


class PromptTooLong(ValueError):
    """A prompt (image tokens included) longer than the model's context."""


# --- loading ---------------------------------------------------------------------------------------------------


def _without_video_processor(processor_class):
    """`processor_class` with its video processor left out. transformers' video processors need torchvision, and
    the PyPI torchvision is a CUDA build that does not load beside the CPU torch (docs/evaluation.md): without it no
    processor with a video part (Qwen2.5-VL's, LLaVA-OneVision's, ...) can be built, although images never use it.
    The subclass keeps every method; its sub-processors are the others (ProcessorMixin takes them from
    get_attributes)."""
    def get_attributes(cls):
        return [name for name in processor_class.get_attributes() if name != "video_processor"]

    return type(processor_class.__name__, (processor_class,), {
        "get_attributes": classmethod(get_attributes), "__module__": processor_class.__module__,
        "__doc__": processor_class.__doc__})


def local_checkpoint(model_path: Union[str, os.PathLike]) -> Path:
    folder = Path(model_path)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder} (local folders only: nothing is downloaded)")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"checkpoint {folder}: no config.json: not a transformers model folder")
    return folder


def load_processor(model_path: Union[str, os.PathLike]):
    """The checkpoint's processor (AutoProcessor, local files only). On a machine without torchvision the video
    processor is left out (see _without_video_processor); nothing else changes."""
    from transformers import AutoConfig, AutoProcessor
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
    from transformers.utils import is_torchvision_available

    folder = local_checkpoint(model_path)
    try:
        return AutoProcessor.from_pretrained(folder, local_files_only=True)
    except (ImportError, OSError, ValueError):  # the video processor: needs torchvision, or finds no config of its own
        if is_torchvision_available():
            raise
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if type(config) not in PROCESSOR_MAPPING:
            raise
        processor_class = _without_video_processor(PROCESSOR_MAPPING[type(config)])
        return processor_class.from_pretrained(folder, local_files_only=True)


def load_image_text_model(model_path: Union[str, os.PathLike], *, device: Optional[str] = None,
                          dtype: Optional[torch.dtype] = None):
    """(model in eval mode, processor) of a local image-text-to-text checkpoint; CheckpointError names the folder
    when it is none, or when it has no chat template."""
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    from ..qwen_vl.loading import default_device, default_dtype

    folder = local_checkpoint(model_path)
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {folder}: config.json cannot be read: {e}") from e
    if type(config) not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:
        hint = " (a Qwen-VL-Chat-format folder: use --backend hf)" if config.model_type == "qwen" else ""
        raise CheckpointError(f"checkpoint {folder} is not an image-text-to-text model: model_type "
                              f"{config.model_type!r} has no AutoModelForImageTextToText class{hint}")
    processor = load_processor(folder)
    if not getattr(processor, "chat_template", None):
        raise CheckpointError(f"checkpoint {folder} has no chat template (chat_template.json, chat_template.jinja or "
                              "tokenizer_config.json): its prompts cannot be rendered")
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype if dtype is not None else default_dtype(device)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype, local_files_only=True)
    return model.to(device).eval(), processor


def context_length(model, processor) -> Optional[int]:
    """The longest prompt the model takes: its text model's max_position_embeddings, else the tokenizer's
    model_max_length when it is a real limit."""
    length = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if length:
        return int(length)
    limit = getattr(getattr(processor, "tokenizer", processor), "model_max_length", None)
    return int(limit) if limit and limit < 10 ** 9 else None


# --- the backend -----------------------------------------------------------------------------------------------


def chat_messages(request: ChatRequest) -> List[Dict[str, Any]]:
    """The request as chat-template messages; image parts are placeholders, the images go to the processor."""
    def content(parts: Sequence[Part]) -> List[Dict[str, str]]:
        return [{"type": "image"} if "image" in part else {"type": "text", "text": part.get("text", "")}
                for part in parts]

    messages = [{"role": "system", "content": [{"type": "text", "text": request.system}]}] if request.system else []
    for query, reply in request.history:
        messages += [{"role": "user", "content": content(query)},
                     {"role": "assistant", "content": [{"type": "text", "text": reply}]}]
    return messages + [{"role": "user", "content": content(request.query)}]


class TransformersBackend(Backend):
    """model_path/device/dtype: see load_image_text_model; or pass a loaded (model, processor). batch_size:
    requests per generate call."""

    name = "transformers"

    def __init__(self, model_path: Optional[Union[str, os.PathLike]] = None, *, device: Optional[str] = None,
                 dtype: Union[str, torch.dtype, None] = None, batch_size: int = 8, model: Any = None,
                 processor: Any = None):
        from .hf import _dtype

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if model is None:
            model, processor = load_image_text_model(model_path, device=device, dtype=_dtype(dtype))
            self._model_name = os.path.abspath(model_path)
        else:
            self._model_name = getattr(model, "name_or_path", None) or type(model).__name__
        self.model, self.processor = model, processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.batch_size = batch_size
        self.context = context_length(model, processor)
        self._image_digest = functools.lru_cache(maxsize=4096)(file_digest)  # 8 judge requests share an image

    def identity(self) -> Dict[str, Any]:
        # The weights' folder and dtype (bf16 and fp32 answers differ); the template and images are in the digest.
        return {"backend": self.name, "model": self._model_name, "dtype": str(next(self.model.parameters()).dtype)}

    def render(self, request: ChatRequest) -> str:
        """The prompt text by the checkpoint's chat template, with the generation prompt."""
        return self.processor.apply_chat_template(chat_messages(request), tokenize=False, add_generation_prompt=True)

    def request_digest(self, request: ChatRequest) -> str:
        """The rendered prompt (so an edited chat template redoes results) and the images by their bytes (the
        path is not part of the prompt here)."""
        try:
            shown = self.render(request)
        except Exception as e:  # the request fails when it is run; its digest can only name the error
            shown = f"unrenderable: {type(e).__name__}"
        images = [self._image_digest(path) for path in request.images()]
        return hashlib.sha256("\0".join([shown, *images]).encode("utf-8")).hexdigest()[:16]

    def generation_kwargs(self, params: GenerationParams) -> Dict[str, Any]:
        """Overrides of the checkpoint's generation config (greedy turns sampling off and drops its knobs)."""
        kwargs: Dict[str, Any] = {}
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:  # not --no_random: sample (the original's meaning), with the checkpoint's knobs unless overridden
            kwargs["do_sample"] = True
            if params.temperature is not None:
                kwargs["temperature"] = params.temperature
            if params.top_p is not None:
                kwargs["top_p"] = params.top_p
        if params.max_new_tokens is not None:
            kwargs["max_new_tokens"] = params.max_new_tokens
        elif self.model.generation_config.max_new_tokens is None:
            kwargs["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        return kwargs

    def generate_iter(
        self, requests: Sequence[ChatRequest], params: GenerationParams
    ) -> Iterator[Tuple[int, Union[ChatResult, BackendError]]]:
        kwargs = self.generation_kwargs(params)
        texts: Dict[int, str] = {}
        for index, request in enumerate(requests):
            try:
                texts[index] = self.render(request)
            except Exception as e:  # jinja2 raises its own errors for a message the template refuses
                yield index, self._error(request, f"the chat template cannot render it: {type(e).__name__}: {e}")
        order = sorted(texts, key=lambda i: len(texts[i]), reverse=True)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            if not params.greedy and params.seed is not None:
                torch.manual_seed(params.seed)  # sampling repeatable per batch
            try:
                results = self._generate([requests[i] for i in chunk], [texts[i] for i in chunk], kwargs, params)
            except (OSError, ValueError) as e:  # an image or a prompt this model cannot take: find it row by row
                if len(chunk) == 1:
                    results = [self._error(requests[chunk[0]], _reason(e))]
                else:
                    results = [self._generate_alone(requests[i], texts[i], kwargs, params) for i in chunk]
            yield from zip(chunk, results)

    def _generate_alone(self, request: ChatRequest, text: str, kwargs: Dict[str, Any],
                        params: GenerationParams) -> Union[ChatResult, BackendError]:
        try:
            return self._generate([request], [text], kwargs, params)[0]
        except (OSError, ValueError) as e:
            return self._error(request, _reason(e))

    def _inputs(self, requests: Sequence[ChatRequest], texts: Sequence[str]):
        from ..qwen_vl.image_processing_qwen import load_image

        images = [[load_image(path) for path in request.images()] for request in requests]
        try:
            inputs = self.processor(text=list(texts), images=images if any(images) else None, padding=True,
                                    padding_side="left", return_tensors="pt")
        except (ValueError, TypeError, OSError) as e:
            shown = ", ".join(path for request in requests for path in request.images())
            raise ValueError(f"the processor rejects the image ({shown}): {e}") from e
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        if self.context is not None and max(lengths) >= self.context:
            raise PromptTooLong(f"prompt of {max(lengths)} tokens (image tokens included) is longer than the "
                                f"model's context of {self.context} tokens")
        return inputs.to(self.model.device), lengths

    def _generate(self, requests: Sequence[ChatRequest], texts: Sequence[str], kwargs: Dict[str, Any],
                  params: GenerationParams) -> List[ChatResult]:
        inputs, lengths = self._inputs(requests, texts)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        limit = kwargs.get("max_new_tokens") or self.model.generation_config.max_new_tokens
        return [self._result(row.tolist(), length, limit, params.stop) for row, length in zip(new_tokens, lengths)]

    def _result(self, ids: List[int], prompt_tokens: int, limit: Optional[int], stop: Sequence[str]) -> ChatResult:
        ends = self.model.generation_config.eos_token_id
        ends = set(ends if isinstance(ends, list) else [ends] if ends is not None else [])
        cut = next((i for i, token in enumerate(ids) if token in ends), None)
        kept = ids if cut is None else ids[:cut]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        stopped = [text.index(s) for s in stop if s in text]
        finish = "stop" if cut is not None or stopped or limit is None or len(kept) < limit else "length"
        if stopped:
            text = text[:min(stopped)]
        return ChatResult(text=text, finish_reason=finish, prompt_tokens=int(prompt_tokens),
                          completion_tokens=len(kept) + (cut is not None))

    def _error(self, request: ChatRequest, reason: str) -> BackendError:
        return BackendError(f"checkpoint {self._model_name}: {reason}", key=request.key)


def _reason(error: Exception) -> str:
    """Our ValueErrors are sentences already; other errors (e.g. an unreadable image) keep their type."""
    return str(error) if isinstance(error, ValueError) and str(error) else f"{type(error).__name__}: {error}"
