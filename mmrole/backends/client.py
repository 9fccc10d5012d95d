"""THE OpenAI-compatible client of the project: data generation, the GPT judge and the `openai`
inference backend all talk to models through it.

    from mmrole.backends.client import ChatClient, ChatCall, RequestFailed, user_message, system_message

    client = ChatClient("gpt-4-turbo", concurrency=4)        # key from $OPENAI_API_KEY,
                                                             # endpoint from $OPENAI_BASE_URL
    done = client.chat([system_message("..."), user_message("Describe it.", images=["a.jpg"])])
    done.text, done.prompt_tokens, done.cost_usd

    calls = [ChatCall(key=i, messages=[...], params={"max_tokens": 512}, validate=parse_json) for i in ...]
    for outcome in client.chat_many(calls):                  # as each finishes, in any order
        if isinstance(outcome, RequestFailed): report(outcome.key, outcome.message)
        else: save(outcome.key, outcome.value)               # value = what validate returned
    print(client.usage.summary())

What it does for every call:
- Retries, with exponential backoff and jitter, on 408/409/429/5xx, timeouts, dropped connections,
  and on bodies that are not valid JSON (truncated or garbage: the SDK raises JSONDecodeError or
  APIResponseValidationError for those and does not retry them itself), on responses without a
  message, and on any `MalformedResponse` raised by the call's `validate`. The SDK's own retries are
  switched off so there is one policy: at most `max_attempts` attempts, delays
  `min(backoff_max, backoff_initial * 2**(n-1))` scaled by a random factor in [0.5, 1], and a
  server's `Retry-After` honoured up to `backoff_max`. Other errors (400, 422) fail the call at
  once: retrying cannot fix them.
- 401, 403 and 404 (a rejected key, no access, a model the endpoint does not serve) fail every
  call alike: the first one stops the client. `chat`/`chat_many` raise EndpointRejected with one
  message; calls not yet sent are never sent (at most the calls already in flight reach the server).
- A call that still fails comes back as `RequestFailed` (from `chat_many`) or is raised (from
  `chat`); it carries the caller's key, the attempts made and a message. Nothing failed is ever
  returned as data.
- Counts requests, attempts, tokens and cost (`usage`, thread-safe). Prices are USD per million
  tokens: `Prices(input, output)`, by default looked up in `DEFAULT_PRICES` by model name
  (list prices at the time of writing; pass your own when they change or for other endpoints).
- Never lets the API key reach a log line, an exception message or a result: every message we
  produce goes through `redact`.
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import openai

from ..common.cli import redact_keys
from ..common.images import image_type
from ..common.store import PathLike

__all__ = [
    "ChatClient", "ChatCall", "Completion", "RequestFailed", "EndpointRejected", "MalformedResponse", "Prices", "Usage",
    "DEFAULT_PRICES", "image_data_url", "user_message", "system_message", "redact",
]

logger = logging.getLogger(__name__)

Message = Dict[str, Any]

RETRYABLE_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
# Answers that no other request will escape: the key is refused, or the model is unknown.
REJECTED_STATUS = {401: "the API key was refused", 403: "the API key has no access",
                   404: "the endpoint does not know this model or path"}


@dataclass(frozen=True)
class Prices:
    """USD per million tokens."""

    input: float = 0.0
    output: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


# List prices (USD / 1M tokens) when this was written; a model not listed costs 0 unless priced.
DEFAULT_PRICES: Dict[str, Prices] = {
    "gpt-4-turbo": Prices(10.0, 30.0),
    "gpt-4-vision-preview": Prices(10.0, 30.0),
    "gpt-4-1106-vision-preview": Prices(10.0, 30.0),
    "gpt-4": Prices(30.0, 60.0),
    "gpt-4o": Prices(2.5, 10.0),
    "gpt-4o-mini": Prices(0.15, 0.6),
}


class MalformedResponse(ValueError):
    """Raise from a call's `validate` when a reply is unusable but a new attempt may do better."""


class RequestFailed(RuntimeError):
    """A call that failed for good. `key` is the caller's; `retryable` says whether the last error
    was a transient one (the attempts ran out) or a permanent one (e.g. 401, 400)."""

    def __init__(self, key: Any, message: str, *, attempts: int, retryable: bool, rejected: bool = False):
        super().__init__(message)
        self.key = key
        self.message = message
        self.attempts = attempts
        self.retryable = retryable
        self.rejected = rejected  # the last attempt's reply was turned down by the call's validate

    def __str__(self) -> str:
        return f"{self.message} (after {self.attempts} attempt{'s' if self.attempts != 1 else ''})"


class EndpointRejected(RuntimeError):
    """The endpoint refused the key or does not serve the model (HTTP 401/403/404): no call can succeed."""


@dataclass(frozen=True)
class ChatCall:
    """One request. params go to `chat.completions.create` (max_tokens, temperature, top_p, seed,
    stop, response_format, ...). validate(completion) returns the value the caller keeps (e.g. the
    parsed JSON) or raises MalformedResponse to ask for another attempt.

    messages may be a function returning them: it is called once, when the call is sent, so a
    large batch holds base64 images only for the calls in flight (and none for calls never made).
    If it raises (e.g. an unreadable image), the call fails without an attempt.
    label names the call in log messages (e.g. "sample X [Fluency]"; default: the key)."""

    messages: Union[Sequence[Message], Callable[[], Sequence[Message]]]
    key: Any = None
    params: Dict[str, Any] = field(default_factory=dict)
    validate: Optional[Callable[["Completion"], Any]] = None
    label: Optional[str] = None


@dataclass
class Completion:
    key: Any
    text: str
    finish_reason: Optional[str]
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 1
    value: Any = None  # what validate returned; the text when there is no validate


@dataclass
class Usage:
    """Running totals over every call of a client (all attempts count towards tokens and cost)."""

    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def summary(self) -> str:
        return (f"{self.calls} calls ({self.succeeded} ok, {self.failed} failed), {self.attempts} attempts "
                f"({self.retries} retries), tokens: {self.prompt_tokens} in / {self.completion_tokens} out, "
                f"cost ${self.cost_usd:.4f}")


# --- messages ------------------------------------------------------------------------------------

def image_data_url(path: PathLike) -> str:
    """The image file as a `data:<mime>;base64,...` URL (what vision endpoints accept inline)."""
    path = Path(path)
    data = path.read_bytes()
    mime = image_type(data) or mimetypes.guess_type(path.name)[0]
    if not mime or not mime.startswith("image/"):
        raise ValueError(f"{path}: not a recognised image file")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def system_message(text: str) -> Message:
    return {"role": "system", "content": text}


def user_message(text: str, *, images: Sequence[PathLike] = (), detail: Optional[str] = None) -> Message:
    """A user message: the images first (as base64 data URLs), then the text."""
    if not images:
        return {"role": "user", "content": text}
    parts: List[dict] = []
    for image in images:
        image_url = {"url": image_data_url(image)}
        if detail:
            image_url["detail"] = detail
        parts.append({"type": "image_url", "image_url": image_url})
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


# --- secrets -------------------------------------------------------------------------------------

def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secrets and without anything shaped like an API key."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return redact_keys(text)


# --- the client ----------------------------------------------------------------------------------

class _Retryable(Exception):
    """Internal: an attempt failed in a way another attempt may fix."""

    def __init__(self, message: str, retry_after: Optional[float] = None, rejected: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.rejected = rejected  # the reply arrived but validate turned it down


class ChatClient:
    """Chat completions against any OpenAI-compatible endpoint, with bounded concurrency and retries.

    model: the model name sent with every request (e.g. from `--model`).
    base_url: the endpoint (default: $OPENAI_BASE_URL, else OpenAI's).
    api_key: the key (default: the environment variable `api_key_env`). Only a custom endpoint may
        run without one (local servers usually ignore it).
    concurrency: requests in flight in `chat_many`.
    max_attempts: attempts per call, the first included.
    timeout: seconds per attempt.
    prices: USD per million tokens (default: DEFAULT_PRICES[model], else free).
    sleep, rng: injectable for tests.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        max_attempts: int = 5,
        timeout: float = 120.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        prices: Optional[Prices] = None,
        default_params: Optional[Dict[str, Any]] = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Optional[random.Random] = None,
    ):
        if not model:
            raise ValueError("a model name is required (--model)")
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get(api_key_env) or None
        if api_key is None:
            if base_url is None:
                raise ValueError(f"no API key: set ${api_key_env} (or pass --base_url for a local endpoint)")
            api_key = "EMPTY"  # the SDK insists on a key; local endpoints ignore it
            logger.warning("no API key in $%s: requests go to %s without one (fine for a local server that needs "
                           "none; one that needs a key stops the run with a 401)", api_key_env, base_url)
        self.model = model
        self.base_url = base_url
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.prices = prices if prices is not None else DEFAULT_PRICES.get(model, Prices())
        self.default_params = dict(default_params or {})
        self._secrets = (api_key,)
        self.api_key_env = api_key_env
        self._rejected: Optional[EndpointRejected] = None  # set by the first 401/403/404: stops every call
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._usage_lock = threading.Lock()
        self.usage = Usage()
        # max_retries=0: our loop owns every retry (one policy, one attempt count).
        self._sdk = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    def __repr__(self) -> str:  # no key here either
        return f"ChatClient(model={self.model!r}, base_url={self.base_url!r}, concurrency={self.concurrency})"

    # --- public API ------------------------------------------------------------------------------

    def chat(self, messages: Sequence[Message], *, key: Any = None,
             validate: Optional[Callable[[Completion], Any]] = None, **params: Any) -> Completion:
        """One call, retried as needed; raises RequestFailed when it fails for good."""
        outcome = self._run(ChatCall(messages=list(messages), key=key, params=params, validate=validate))
        if isinstance(outcome, RequestFailed):
            raise self._rejected or outcome
        return outcome

    def chat_many(self, calls: Iterable[ChatCall]) -> Iterator[Union[Completion, RequestFailed]]:
        """Run calls `concurrency` at a time; yield each Completion or RequestFailed as it finishes.

        Calls are taken from the iterable lazily (at most 2 x concurrency waiting), so a generator
        of many calls is fine. Stopping the iteration early cancels the calls not yet started and
        waits for those in flight (their results are dropped). EndpointRejected is raised, once, as
        soon as the endpoint refuses the key or the model (see the module doc).
        """
        calls = iter(calls)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="chat")
        pending: set = set()
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < 2 * self.concurrency:
                    call = next(calls, None)
                    if call is None:
                        exhausted = True
                    else:
                        pending.add(pool.submit(self._run, call))
                if not pending:
                    return
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                if self._rejected is not None:  # the calls in flight still finish; nothing else is sent
                    for future in pending:
                        future.cancel()
                    finished |= wait(pending)[0]
                    pending = set()
                for future in finished:
                    outcome = None if future.cancelled() else future.result()
                    if outcome is not None and not (self._rejected and isinstance(outcome, RequestFailed)):
                        yield outcome
                if self._rejected is not None:
                    raise self._rejected
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def chat_stream(self, messages: Sequence[Message], *, label: str = "stream", **params: Any) -> Iterator[str]:
        """One call with `stream: true`: the reply's text, piece by piece as it arrives. Failures before the first
        piece are retried as every call is; once text has arrived a failure ends the call (another attempt would
        repeat what the caller already has). Raises RequestFailed (its message redacted) when the call fails, and
        EndpointRejected when the endpoint refuses the key or the model (then, as for `chat`, every later call)."""
        if self._rejected is not None:
            raise self._rejected
        with self._usage_lock:
            self.usage.calls += 1
        call = ChatCall(messages=list(messages), params=params, label=label)
        stream, attempts = self._open_stream(call)
        try:
            with stream:
                for chunk in stream:
                    choices = getattr(chunk, "choices", None) or []
                    piece = getattr(getattr(choices[0], "delta", None), "content", None) if choices else None
                    if piece:
                        yield piece
        except (openai.APIError, json.JSONDecodeError, ValueError) as e:  # the stream broke off after it began
            raise self._failed(call, self._redact(f"the reply broke off: {type(e).__name__}: {e}"), attempts,
                               True) from None
        with self._usage_lock:
            self.usage.succeeded += 1

    def _open_stream(self, call: ChatCall) -> Tuple[Any, int]:
        """(the opened stream, attempts made), retrying as _run does; raises RequestFailed or EndpointRejected."""
        message = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            with self._usage_lock:
                self.usage.attempts += 1
                self.usage.retries += attempt > 1
            try:
                return self._create(list(call.messages), {**self.default_params, **call.params, "stream": True}), attempt
            except _Retryable as e:
                message = self._redact(str(e))
                if attempt < self.max_attempts:
                    self._sleep(self._delay(attempt, e.retry_after))
            except openai.APIStatusError as e:
                message = self._redact(f"HTTP {e.status_code}: {_error_text(e)}")
                if e.status_code in REJECTED_STATUS:
                    self._reject(e.status_code, message)
                    self._failed(call, message, attempt, False, log=False)
                    raise self._rejected from None
                raise self._failed(call, message, attempt, False) from None
        raise self._failed(call, message, self.max_attempts, True)

    def close(self) -> None:
        self._sdk.close()

    # --- one call --------------------------------------------------------------------------------

    def _run(self, call: ChatCall) -> Union[Completion, RequestFailed]:
        """All attempts of one call; never raises (a bug in validate becomes a failure too)."""
        with self._usage_lock:
            self.usage.calls += 1
        message = "no attempt made"
        retryable = rejected = True
        attempt = 0
        try:
            messages = list(call.messages() if callable(call.messages) else call.messages)
        except Exception as e:  # no attempt can fix a request that cannot be built
            message, retryable = self._redact(f"cannot build the request: {type(e).__name__}: {e}"), False
            return self._failed(call, message, attempt, retryable)
        for attempt in range(1, self.max_attempts + 1):
            if self._rejected is not None:  # another call found the key or the model refused: send nothing more
                return self._failed(call, str(self._rejected), attempt - 1, False, log=False)
            with self._usage_lock:
                self.usage.attempts += 1
                self.usage.retries += attempt > 1
            try:
                completion = self._attempt(call, messages)
                completion.attempts = attempt
                with self._usage_lock:
                    self.usage.succeeded += 1
                return completion
            except _Retryable as e:
                message, rejected = self._redact(str(e)), e.rejected
                if attempt < self.max_attempts:
                    delay = self._delay(attempt, e.retry_after)
                    logger.warning("%s: attempt %d/%d failed (%s); retrying in %.1fs",
                                   self._label(call), attempt, self.max_attempts, message, delay)
                    self._sleep(delay)
            except openai.APIStatusError as e:  # not retryable (400, 401, 403, 404, 422, ...)
                message, retryable = self._redact(f"HTTP {e.status_code}: {_error_text(e)}"), False
                if e.status_code in REJECTED_STATUS:
                    self._reject(e.status_code, message)
                    return self._failed(call, message, attempt, False, log=False)
                break
            except Exception as e:  # an unexpected error (e.g. a bug in validate): report, never crash the pool
                message, retryable = self._redact(f"{type(e).__name__}: {e}"), False
                break
        return self._failed(call, message, attempt, retryable, rejected=retryable and rejected)

    def _failed(self, call: ChatCall, message: str, attempts: int, retryable: bool, *, rejected: bool = False,
                log: bool = True) -> RequestFailed:
        with self._usage_lock:
            self.usage.failed += 1
        if log:
            logger.error("%s failed: %s", self._label(call), message)
        return RequestFailed(call.key, message, attempts=attempts, retryable=retryable, rejected=rejected)

    def _label(self, call: ChatCall) -> str:
        return self._redact(call.label if call.label is not None else f"call {call.key!r}")

    def _reject(self, status: int, message: str) -> None:
        """Remember the first refusal; every call still to send fails without being sent."""
        with self._usage_lock:
            if self._rejected is not None:
                return
            where = self.base_url or "the OpenAI API"
            hint = (f"check the key in ${self.api_key_env}" if status in (401, 403)
                    else f"check --model {self.model!r} (and --base_url)")
            self._rejected = EndpointRejected(
                f"{where} answered {message}: {REJECTED_STATUS[status]}, so no request can succeed; stopped at once "
                f"({hint})")

    def _create(self, messages: List[Message], params: Dict[str, Any]) -> Any:
        """One request to the endpoint: its response (a stream with `stream=True`); _Retryable for what another
        attempt may fix, openai.APIStatusError for what it cannot."""
        try:
            return self._sdk.chat.completions.create(model=self.model, messages=messages, **params)
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from None
        except openai.APIStatusError as e:
            if e.status_code in RETRYABLE_STATUS:
                raise _Retryable(f"HTTP {e.status_code}: {_error_text(e)}", _retry_after(e)) from None
            raise
        except (json.JSONDecodeError, openai.APIResponseValidationError) as e:
            raise _Retryable(f"malformed response body ({type(e).__name__}: {e})") from None

    def _attempt(self, call: ChatCall, messages: List[Message]) -> Completion:
        response = self._create(messages, {**self.default_params, **call.params})
        if isinstance(response, str):  # some SDK paths hand back the raw text of a non-JSON body
            raise _Retryable("malformed response body (not a JSON object)")
        completion = self._completion(call, response)
        if call.validate is None:
            completion.value = completion.text
            return completion
        try:
            completion.value = call.validate(completion)
        except MalformedResponse as e:
            raise _Retryable(f"unusable reply: {e}", rejected=True) from None
        return completion

    def _completion(self, call: ChatCall, response: Any) -> Completion:
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = self.prices.cost(prompt_tokens, completion_tokens)
        with self._usage_lock:  # tokens are paid for even when the reply is then rejected
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
            self.usage.cost_usd += cost
        choices = getattr(response, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        text = getattr(message, "content", None)
        if not isinstance(text, str):
            raise _Retryable("response holds no message content")
        return Completion(key=call.key, text=text, finish_reason=getattr(choices[0], "finish_reason", None),
                          model=getattr(response, "model", None) or self.model, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens, cost_usd=cost)

    def _delay(self, attempt: int, retry_after: Optional[float]) -> float:
        with self._rng_lock:
            jitter = self._rng.uniform(0.5, 1.0)
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1)) * jitter
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)


def _error_text(error: "openai.APIStatusError") -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(error, "message", "") or error)


def _retry_after(error: "openai.APIStatusError") -> Optional[float]:
    try:
        value = error.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, ValueError):
        return None
