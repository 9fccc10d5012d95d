"""One interface for every model the pipeline talks to: "answer these chat requests".

Inference (the MRPA answers), review (the judge) and the HTTP server all go through it, so a local
Qwen-VL checkpoint (`hf`) and any OpenAI-compatible endpoint (`openai`) are interchangeable.
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

# A message part in Qwen-VL's list format: {"text": "..."} or {"image": "<local path>"}.
Part = Dict[str, str]


@dataclass(frozen=True)
class ChatRequest:
    """One chat turn to answer.

    query: the new user message as parts, in order (Qwen-VL renders it with `from_list_format`).
    system: the system prompt.
    history: earlier turns as (user parts, assistant reply), oldest first.
    key: an opaque id carried through for the caller (e.g. (sample id, metric)).
    """

    query: Tuple[Part, ...]
    system: str
    history: Tuple[Tuple[Tuple[Part, ...], str], ...] = ()
    key: object = None

    @classmethod
    def single(cls, text: str, *, image: Optional[str] = None, system: str, key: object = None) -> "ChatRequest":
        """The MMRole shape: one image (first) and one text, no history — as the original scripts asked."""
        parts: List[Part] = [{"image": image}] if image is not None else []
        parts.append({"text": text})
        return cls(query=tuple(parts), system=system, key=key)

    @property
    def label(self) -> str:
        """The request as messages name it: its key is the caller's, e.g. (sample id,) or (sample id, metric,
        order), so the sample id comes first."""
        key = self.key if isinstance(self.key, tuple) else (self.key,)
        if not key or key == (None,):
            return "request"
        rest = ", ".join(str(part) for part in key[1:])
        return f"sample {key[0]}" + (f" [{rest}]" if rest else "")

    def images(self) -> List[str]:
        """Every image path of the request, history first, in order of appearance."""
        found = [p["image"] for turn, _ in self.history for p in turn if "image" in p]
        return found + [p["image"] for p in self.query if "image" in p]

    def content_hash(self, image_key: Optional[Callable[[str], str]] = None) -> str:
        """A digest of what the model is shown (system, history, query): journals use it to notice an
        input that changed. Images count by path (a local Qwen-VL's prompt names the path), or by
        image_key(path) when given (e.g. a digest of the bytes an API backend sends)."""
        def shown(parts: Sequence[Part]) -> List[Part]:
            return [{"image": image_key(p["image"])} if image_key and "image" in p else p for p in parts]

        history = [(shown(turn), reply) for turn, reply in self.history]
        text = json.dumps([self.system, history, shown(self.query)], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_digest(path: str) -> str:
    """An image as a backend that sends or decodes its bytes sees it (rather than by its path): journals notice new
    content at the same path, and another spelling of the same folder changes nothing."""
    try:
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:  # the request fails when it is run; its digest can only name the path
        return "unreadable:" + path


DEFAULT_SEED = 1234  # the original scripts seeded torch with it


@dataclass(frozen=True)
class GenerationParams:
    """How to generate. None means: the backend's default (for `hf`, the checkpoint's
    generation_config.json, exactly as the original scripts used it)."""

    greedy: bool = False
    max_new_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    stop: Tuple[str, ...] = ()
    seed: Optional[int] = None


@dataclass
class ChatResult:
    text: str
    finish_reason: str = "stop"  # "stop" or "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: Dict[str, object] = field(default_factory=dict)


class BackendError(RuntimeError):
    """A request failed for good (after the backend's own retries); carries the request key."""

    def __init__(self, message: str, key: object = None):
        super().__init__(message)
        self.key = key


class FatalBackendError(RuntimeError):
    """No request can succeed (the endpoint refused the API key, or does not serve the model): the run
    stops at once with this one message instead of failing every item."""


class Backend(abc.ABC):
    """Answers chat requests. Implementations batch or parallelise internally."""

    name: str = "backend"

    @abc.abstractmethod
    def generate_iter(
        self, requests: Sequence[ChatRequest], params: GenerationParams
    ) -> Iterator[Tuple[int, Union[ChatResult, BackendError]]]:
        """Yield (index into requests, result or error) as each request finishes, in any order.

        A failed request yields a BackendError instead of raising, so one bad item never stops
        the others; callers record it and move on. Only FatalBackendError is raised: then no
        request can succeed.
        """

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> List[Union[ChatResult, BackendError]]:
        """All results, in request order."""
        results: List[Union[ChatResult, BackendError, None]] = [None] * len(requests)
        for index, result in self.generate_iter(requests, params):
            results[index] = result
        return results  # type: ignore[return-value]

    def request_digest(self, request: ChatRequest) -> str:
        """What the journal records of a request to notice later that it changed: the content as this
        backend shows it to the model."""
        return request.content_hash()

    def uses_seed(self) -> bool:
        """Whether GenerationParams.seed reaches the model (so it decides sampled results)."""
        return True

    def identity(self) -> Dict[str, Any]:
        """What names the model that answers (recorded with every journal entry, so results of
        another model are never taken for this one's)."""
        return {"backend": self.name}

    def close(self) -> None:
        """Release resources (threads, connections)."""
