"""The `openai` backend: any OpenAI-compatible chat-completions endpoint, through mmrole.backends.client.

A request's parts become one user message whose content lists the images (base64 data URLs) and
texts in their order; the system prompt is a system message; history turns become earlier
user/assistant messages. Concurrency, retries, secrets and accounting are the client's.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .base import (Backend, BackendError, ChatRequest, ChatResult, FatalBackendError, GenerationParams, Part,
                   file_digest)
from .client import ChatCall, ChatClient, Completion, EndpointRejected, RequestFailed, image_data_url, system_message


def _content(parts: Sequence[Part], encode: Callable[[str], str] = image_data_url) -> Union[str, List[Dict[str, Any]]]:
    """Parts in order; a text-only turn stays a plain string (what every endpoint accepts)."""
    if all("image" not in part for part in parts):
        return "".join(part.get("text", "") for part in parts)
    content: List[Dict[str, Any]] = []
    for part in parts:
        if "image" in part:
            content.append({"type": "image_url", "image_url": {"url": encode(part["image"])}})
        elif "text" in part:
            content.append({"type": "text", "text": part["text"]})
    return content


def chat_messages(request: ChatRequest, encode: Callable[[str], str] = image_data_url) -> List[Dict[str, Any]]:
    """The request as chat-completions messages. OSError/ValueError when an image is unreadable."""
    messages = [system_message(request.system)] if request.system else []
    for query, reply in request.history:
        messages.append({"role": "user", "content": _content(query, encode)})
        messages.append({"role": "assistant", "content": reply})
    messages.append({"role": "user", "content": _content(request.query, encode)})
    return messages


def completion_params(params: GenerationParams, *, send_seed: bool = False) -> Dict[str, Any]:
    """GenerationParams as request fields; None leaves the endpoint's default. The seed only with
    send_seed: some OpenAI-compatible endpoints reject the field."""
    fields: Dict[str, Any] = {}
    if params.greedy:
        fields["temperature"] = 0.0
    elif params.temperature is not None:
        fields["temperature"] = params.temperature
    if params.top_p is not None and not params.greedy:
        fields["top_p"] = params.top_p
    if params.max_new_tokens is not None:
        fields["max_tokens"] = params.max_new_tokens
    if params.stop:
        fields["stop"] = list(params.stop)
    if send_seed and params.seed is not None:
        fields["seed"] = params.seed
    return fields


class OpenAIBackend(Backend):
    """model: the served model name. send_seed: send GenerationParams.seed as the request's `seed`
    (off by default: some endpoints reject it; the scripts turn it on when --seed is given). Other
    options go to ChatClient (base_url, api_key_env, concurrency, max_attempts, timeout,
    backoff_initial, ...); or pass a ready `client`."""

    name = "openai"

    def __init__(self, model: Optional[str] = None, *, client: Optional[ChatClient] = None, send_seed: bool = False,
                 **client_options: Any):
        if client is None:
            client_options = {k: v for k, v in client_options.items() if v is not None}
            client = ChatClient(model, **client_options)
        self.client = client
        self.send_seed = send_seed
        # The 8 judge requests of a sample share one image: encode it once, not 8 times.
        self._encode = functools.lru_cache(maxsize=32)(image_data_url)
        self._image_digest = functools.lru_cache(maxsize=4096)(file_digest)

    def generate_iter(
        self, requests: Sequence[ChatRequest], params: GenerationParams
    ) -> Iterator[Tuple[int, Union[ChatResult, BackendError]]]:
        fields = completion_params(params, send_seed=self.send_seed)
        unreadable: List[Tuple[int, BackendError]] = []

        def calls() -> Iterator[ChatCall]:  # built lazily: only ~2 x concurrency images in memory
            for index, request in enumerate(requests):
                try:
                    yield ChatCall(messages=chat_messages(request, self._encode), key=index, params=fields,
                                   label=request.label)
                except (OSError, ValueError) as e:  # e.g. a missing or corrupt image: this request only
                    unreadable.append((index, BackendError(f"cannot build the request: {e}", key=request.key)))

        try:
            for outcome in self.client.chat_many(calls()):
                while unreadable:
                    yield unreadable.pop()
                if isinstance(outcome, RequestFailed):
                    yield outcome.key, BackendError(str(outcome), key=requests[outcome.key].key)
                else:
                    yield outcome.key, _result(outcome)
        except EndpointRejected as e:  # the key or the model: no other request can succeed
            raise FatalBackendError(str(e)) from None
        while unreadable:
            yield unreadable.pop()

    def request_digest(self, request: ChatRequest) -> str:
        """Images count by their bytes (what is sent), not by path: another spelling of the same folder
        redoes nothing, new content at the same path is noticed."""
        return request.content_hash(image_key=self._image_digest)

    def identity(self) -> Dict[str, Any]:
        # The served model's name, not the URL: the same model behind another address is the same judge.
        return {"backend": self.name, "model": self.client.model}

    def uses_seed(self) -> bool:
        return self.send_seed

    def usage_summary(self) -> str:
        return self.client.usage.summary()

    def close(self) -> None:
        self.client.close()


def _result(completion: Completion) -> ChatResult:
    return ChatResult(
        text=completion.text,
        finish_reason="length" if completion.finish_reason == "length" else "stop",
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        extra={"cost_usd": completion.cost_usd, "attempts": completion.attempts},
    )
