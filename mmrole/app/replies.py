"""Where the chat page's replies come from, streamed: a local checkpoint through the server's engine, or any
OpenAI-compatible endpoint through the project's client.

Both take the ChatRequest inference would send (mmrole.app.conversation) and yield the reply as it grows (the whole
text so far at each step). Every failure a user can meet is a ReplyError whose message is written for the page: it
names the problem (the endpoint cannot be reached, the key was refused, the model is busy, the conversation is too
long) and never holds a key, a stack trace or exception internals.

- LocalReplies: an HFBackend driven by mmrole.serve.engine.ChatEngine, the continuous-batching scheduler of
  serve.py: the turns of every user of the page decode together in one batch, each row as one-at-a-time `chat()`
  would decode it (greedy answers are equal). The image reaches the model as pixels; the prompt ids are the ones
  serve.py builds (all text plain text: a user typing `<img>/etc/passwd</img>` gets those characters, not a file).
- EndpointReplies: chat-completions with `stream: true` through mmrole.backends.client.ChatClient (its key from the
  environment, redacted from every message), the request's messages as the `openai` backend builds them.
"""

from __future__ import annotations

import queue
from typing import Iterator, Optional

from ..backends.base import ChatRequest, GenerationParams
from ..backends.client import ChatClient, EndpointRejected, RequestFailed
from ..backends.openai import chat_messages, completion_params

# Seconds without any event from the engine before the page is told something is wrong (a step of a real model on a
# CPU can take seconds; minutes without one means the engine is stuck).
ENGINE_SILENCE_LIMIT = 600.0


class ReplyError(RuntimeError):
    """A reply that could not be had; the message is for the page."""


class LocalReplies:
    """Replies of a local Qwen-VL checkpoint (an HFBackend) through the engine of mmrole.serve.

    batch_size: rows decoding together (the turns of different users); max_queue: turns waiting beyond it are refused
    with a 'busy' message; max_context_tokens: prompt + max_new_tokens at most (default the tokenizer's
    model_max_length)."""

    def __init__(self, backend, *, batch_size: int = 8, max_queue: int = 64, max_context_tokens: Optional[int] = None):
        from ..serve.engine import ChatEngine

        self.backend = backend
        self.engine = ChatEngine(backend, max_batch_size=batch_size, max_queue=max_queue)
        self.engine.check_settings()
        self.engine.start()
        self.image_size = backend.model.config.visual["image_size"]
        self.max_context_tokens = max_context_tokens or getattr(backend.tokenizer, "model_max_length", 8192)
        self.name = backend.identity().get("model", "local checkpoint")

    def describe(self) -> str:
        return f"local checkpoint {self.name} (batched with the other users of this page)"

    def stream(self, request: ChatRequest, params: GenerationParams) -> Iterator[str]:
        from ..serve.engine import EngineClosed, EngineOverloaded, Job

        job = Job(request, params, self._prompt_ids(request, params), images=self._pixels(request), stream=True)
        try:
            self.engine.submit(job)
        except EngineOverloaded:
            raise ReplyError(f"the model is busy ({self.engine.max_queue} turns are waiting): try again in a "
                             "moment") from None
        except EngineClosed:
            raise ReplyError("the model is shutting down") from None
        text = ""
        try:
            while True:
                try:
                    kind, value = job.events.get(timeout=ENGINE_SILENCE_LIMIT)
                except queue.Empty:
                    raise ReplyError(f"the model sent nothing for {ENGINE_SILENCE_LIMIT:g} s; try again") from None
                if kind == "delta":
                    text += value
                    yield text
                elif kind == "done":
                    if value.text != text:
                        yield value.text
                    return
                else:
                    raise ReplyError(f"the model could not answer: {value}")
        finally:
            if not job.done.is_set():  # the page went away (or the user stopped it): free the row
                job.cancel()

    def _prompt_ids(self, request: ChatRequest, params: GenerationParams):
        from ..serve.api import serving_context

        generation_config = self.backend.model.generation_config
        ids = serving_context(self.backend.tokenizer, request, generation_config.max_window_size)
        budget = params.max_new_tokens or generation_config.max_new_tokens
        if len(ids) + budget > self.max_context_tokens:
            raise ReplyError(f"the conversation is too long for the model: the prompt has {len(ids)} tokens, and with "
                             f"{budget} new tokens it exceeds the model's {self.max_context_tokens}; start a new "
                             "conversation")
        return tuple(ids)

    def _pixels(self, request: ChatRequest):
        """The pixels of each image of the request, by the name its span holds (its path: the engine never opens
        a path, it takes these pixels)."""
        from ..qwen_vl.image_processing_qwen import resized_rgb

        try:
            return {path: resized_rgb(path, self.image_size) for path in request.images()}
        except (OSError, ValueError) as e:
            raise ReplyError(f"the image cannot be read any more ({type(e).__name__}); upload it again") from None

    def close(self) -> None:
        self.engine.close()


class EndpointReplies:
    """Replies of an OpenAI-compatible endpoint (serve.py, vLLM, an API) through a ChatClient."""

    def __init__(self, client: ChatClient):
        self.client = client

    def describe(self) -> str:
        return f"model {self.client.model} at {self.client.base_url or 'the OpenAI API'}"

    def stream(self, request: ChatRequest, params: GenerationParams) -> Iterator[str]:
        try:
            messages = chat_messages(request)
        except (OSError, ValueError) as e:
            raise ReplyError(f"the image cannot be sent: {e}") from None
        text = ""
        try:
            for piece in self.client.chat_stream(messages, label="chat page", **completion_params(params)):
                text += piece
                yield text
        except EndpointRejected as e:
            raise ReplyError(str(e)) from None
        except RequestFailed as e:
            raise ReplyError(f"{self.describe()} did not answer: {e}") from None

    def close(self) -> None:
        self.client.close()
