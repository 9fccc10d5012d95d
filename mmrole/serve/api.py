"""The OpenAI chat-completions protocol of mmrole.serve: request validation, Qwen-VL mapping, images,
response bodies and error bodies. No HTTP here (see mmrole.serve.server) and no model calls (mmrole.serve.engine).

Mapping onto the Qwen-VL chat format (what `model.chat(tokenizer, query, history, system)` takes):
- every `system` (or `developer`) message, in order, joined by a newline, is the system prompt
  (none: Qwen-VL-Chat's default "You are a helpful assistant.");
- the other messages alternate user / assistant (consecutive messages of one role are merged) and
  end with a user message: each earlier (user, assistant) pair is a history turn, the last user
  message is the query;
- a user message's parts keep their order: text parts as text, `image_url` parts as images, so an
  image of an earlier turn stays in that turn, numbered `Picture N:` as `from_list_format` does.

Client text is never markup. The prompt ids are built by `serving_context` from list-format parts
(`ListContent`): all text a client sent, in any role, part or message, and however it joins up, is
encoded as plain text, so `<img>`, `</img>`, `<ref>`, `<box>`, `<|im_end|>` in it are just characters.
The only image spans are those of the request's `image_url` parts, and the model gets their pixels
from this module (`RequestImages`), decoded from the bytes the request carried: it is never told to
load a path. A span holds a name made from the image's content digest (Qwen-VL replaces the 256
positions inside a span by the image's features, so the name does not change the answer); the same
image and text therefore give the same ids as `model.chat` on a copy of that image saved under that
name, and the same answer as under any other name.

Images arrive as base64 data URLs (PNG, JPEG, GIF, WebP, BMP). Local files (`file://...` or a plain
path) are read only under `allowed_local_media_path` (off by default), and every local path that
cannot be used (missing, outside that folder, not a file, unreadable, malformed) gets the same answer,
so a client cannot learn which server paths exist. Remote URLs are refused: the server downloads
nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import time
import uuid
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlparse

import torch
from PIL import Image

from ..backends.base import ChatRequest, GenerationParams, Part
from ..common.prompts import DEFAULT_SYSTEM

IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}
MAX_STOP_STRINGS = 4  # as OpenAI
MAX_MESSAGES = 256
# Temperatures below this are greedy decoding (as vLLM's sampling epsilon): dividing scores by a tinier
# temperature overflows float32, and the distribution is the argmax long before that.
GREEDY_TEMPERATURE = 1e-5
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts
# One answer for every local path a client may not use, whatever the reason: no existence probe.
LOCAL_PATH_REFUSED = ("image_url names no image file this server may read (local paths must name a file inside "
                      "the folder the operator allowed)")


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape. The message is written for the client:
    it never holds exception text, stack traces or server paths."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: Optional[str] = None, param: Optional[str] = None, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> Dict[str, Any]:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type: str = "invalid_request_error", code: Optional[str] = None,
               param: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _bad(message: str, param: Optional[str] = None, code: Optional[str] = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass
class ServeConfig:
    """What the server accepts. api_key None = no authentication (fine on 127.0.0.1 only).

    Connection limits (enforced by mmrole.serve's HTTP layer): max_connections open at once;
    header_timeout seconds for a request's head (from the connection's start, or the end of its previous
    answer), body_timeout for its body, keep_alive_timeout for an idle kept-alive connection; a request head
    of at most max_header_bytes."""

    model_name: str
    api_key: Optional[str] = field(default=None, repr=False)
    max_request_bytes: int = 20 * 2**20
    max_images: int = 8
    max_image_pixels: int = 4096 * 4096
    max_tokens_limit: int = 2048
    max_context_tokens: int = 8192
    allowed_local_media_path: Optional[Path] = None
    max_connections: int = 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    max_header_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        positive = {name: getattr(self, name) for name in (
            "max_request_bytes", "max_images", "max_image_pixels", "max_tokens_limit", "max_context_tokens",
            "max_connections", "header_timeout", "body_timeout", "keep_alive_timeout", "max_header_bytes")}
        bad = [f"{name}={value}" for name, value in positive.items() if not value > 0]
        if bad:
            raise ValueError(f"these server limits must be positive: {', '.join(bad)}")


# --- images --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CarriedImage:
    """An image a request carried: the name its span holds, and its pixels resized for the vision tower
    (uint8 RGB [3, S, S]; `normalise_rgb` gives what the model takes)."""

    name: str
    rgb: torch.Tensor


class RequestImages:
    """Turns image_url values into CarriedImages: decoded in memory from the request's bytes, or read from
    a file under `allowed_local_root`. Nothing is written to disk."""

    def __init__(self, image_size: int, *, max_pixels: int = 4096 * 4096,
                 allowed_local_root: Optional[os.PathLike] = None, max_file_bytes: int = 20 * 2**20):
        self.image_size = image_size
        self.max_pixels = max_pixels
        self.max_file_bytes = max_file_bytes
        self.allowed_local_root = Path(allowed_local_root).resolve() if allowed_local_root else None

    def load(self, url: Any) -> CarriedImage:
        if not isinstance(url, str) or not url:
            raise _bad("image_url.url must be a non-empty string", "messages")
        if url.startswith("data:"):
            return self._decode(_decode_data_url(url))
        scheme = urlparse(url).scheme.lower()
        if scheme in ("http", "https", "ftp"):
            raise _bad("remote image URLs are not supported: send the image as a base64 data URL", "messages")
        if scheme not in ("", "file"):
            raise _bad("image_url.url must be a base64 data URL", "messages")
        return self._decode(self._read_local(url))

    def _decode(self, data: bytes) -> CarriedImage:
        from ..qwen_vl.image_processing_qwen import resized_rgb

        with checked_image(BytesIO(data), self.max_pixels) as image:
            name = f"{hashlib.sha256(data).hexdigest()[:32]}.{IMAGE_FORMATS[image.format]}"
            return CarriedImage(name, resized_rgb(image, self.image_size))

    def _read_local(self, url: str) -> bytes:
        """The bytes of a local file inside the allowed folder; LOCAL_PATH_REFUSED for anything else."""
        if self.allowed_local_root is None:
            raise ApiError(400, "local image paths are not allowed on this server; send a base64 data URL "
                           "(the operator can allow a folder with --allowed_local_media_path)", param="messages")
        raw = unquote(urlparse(url).path) if url.lower().startswith("file:") else url
        try:
            path = Path(raw).resolve()  # symlinks and .. resolved before the folder check
            if not path.is_relative_to(self.allowed_local_root):
                raise ValueError("outside the allowed folder")
            with open(path, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_file_bytes:
                    raise ValueError("not a regular file of an acceptable size")
                return handle.read(self.max_file_bytes + 1)
        except (OSError, ValueError, RuntimeError):  # RuntimeError: a symlink loop on older Pythons
            raise _bad(LOCAL_PATH_REFUSED, "messages") from None


def _decode_data_url(url: str) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise _bad("an image data URL must look like data:image/<type>;base64,<data>", "messages")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("the image data URL is not valid base64", "messages") from None


def checked_image(source, max_pixels: int) -> Image.Image:
    """An open, fully decoded image of a supported format and at most max_pixels (use it in a `with`);
    ApiError(400) otherwise."""
    image = None
    try:
        image = Image.open(source)
        if image.format not in IMAGE_FORMATS:
            raise _bad(f"unsupported image format; send one of {', '.join(IMAGE_FORMATS)}", "messages")
        width, height = image.size
        if width * height > max_pixels:
            raise _bad(f"the image has {width}x{height} pixels; at most {max_pixels} are accepted", "messages")
        image.load()  # decode it all now: a truncated file fails here, not beside other requests
        return image
    except ApiError:
        image.close()
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        if image is not None:
            image.close()
        raise _bad("image_url does not hold a readable image", "messages", code="invalid_image") from None


# --- requests ------------------------------------------------------------------------------------

@dataclass
class CompletionRequest:
    """A validated chat-completions request: `request` names its images by their span names, `images` holds
    their pixels by those names."""

    request: ChatRequest
    params: GenerationParams
    stream: bool = False
    include_usage: bool = False
    images: Dict[str, torch.Tensor] = field(default_factory=dict)


def parse_completion_request(body: Any, config: ServeConfig, images: RequestImages) -> CompletionRequest:
    """Validate a request body and map it onto Qwen-VL (ApiError for anything a client got wrong)."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("`model` is required", "model")
    if model != config.model_name:
        shown = model if len(model) <= 80 else model[:80] + "..."
        raise ApiError(404, f"The model `{shown}` does not exist; this server serves `{config.model_name}`",
                       code="model_not_found", param="model")
    _refuse_unsupported(body)
    params = generation_params(body, config)
    stream = _optional(body, "stream", bool, False)
    options = _optional(body, "stream_options", dict, {}) or {}
    include_usage = bool(options.get("include_usage")) if stream else False
    carried: Dict[str, torch.Tensor] = {}
    request = chat_request(body.get("messages"), images, carried, config.max_images)
    return CompletionRequest(request, params, stream, include_usage, carried)


_KIND_NAMES = {bool: "a boolean", int: "an integer", float: "a number", dict: "an object"}


def _optional(body: Dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """body[name] checked to be of `kind` (float accepts ints; bools are never numbers), or default."""
    value = body.get(name)
    if value is None:
        return default
    accepted = (int, float) if kind is float else kind
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, accepted):
        raise _bad(f"`{name}` must be {_KIND_NAMES[kind]}", name)
    return value


def _refuse_unsupported(body: Dict[str, Any]) -> None:
    """Fields we cannot honour are refused rather than silently ignored."""
    for name in ("tools", "functions", "tool_choice", "function_call", "logit_bias", "audio", "prediction"):
        if body.get(name):
            raise _bad(f"`{name}` is not supported by this server", name)
    if body.get("n") not in (None, 1):
        raise _bad("only n=1 is supported", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _bad("logprobs are not supported by this server", "logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise _bad(f"`{name}` is not supported by this server (only 0)", name)
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise _bad("only response_format {\"type\": \"text\"} is supported", "response_format")


def generation_params(body: Dict[str, Any], config: ServeConfig) -> GenerationParams:
    """temperature 0 (or below GREEDY_TEMPERATURE) = greedy; absent fields = the checkpoint's
    generation_config.json."""
    temperature = _optional(body, "temperature", float, None)
    if temperature is not None and not 0 <= temperature <= 2:  # NaN fails too
        raise _bad("`temperature` must be between 0 and 2", "temperature")
    top_p = _optional(body, "top_p", float, None)
    if top_p is not None and not 0 < top_p <= 1:
        raise _bad("`top_p` must be in (0, 1]", "top_p")
    max_tokens = _optional(body, "max_completion_tokens", int, None)
    if max_tokens is None:
        max_tokens = _optional(body, "max_tokens", int, None)
    if max_tokens is not None and not 1 <= max_tokens <= config.max_tokens_limit:
        raise _bad(f"`max_tokens` must be between 1 and {config.max_tokens_limit}", "max_tokens")
    seed = _optional(body, "seed", int, None)
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise _bad("`seed` must be an integer from -2**63 to 2**64-1", "seed")
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, list) else () if stop is None else None
    if stops is None or len(stops) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in stops):
        raise _bad(f"`stop` must be a non-empty string or a list of at most {MAX_STOP_STRINGS} of them", "stop")
    greedy = temperature is not None and temperature < GREEDY_TEMPERATURE
    return GenerationParams(greedy=greedy, max_new_tokens=max_tokens, temperature=None if greedy else temperature,
                            top_p=None if greedy else top_p, stop=stops, seed=seed)


def chat_request(messages: Any, images: RequestImages, carried: Dict[str, torch.Tensor],
                 max_images: int) -> ChatRequest:
    """OpenAI messages -> ChatRequest(query parts, system, history of (parts, reply)); the pixels of every
    image part go into `carried` under the name its part holds."""
    if not isinstance(messages, list) or not messages:
        raise _bad("`messages` must be a non-empty list", "messages")
    if len(messages) > MAX_MESSAGES:
        raise _bad(f"at most {MAX_MESSAGES} messages are accepted", "messages")
    if _count_images(messages) > max_images:
        raise _bad(f"at most {max_images} images per request", "messages")
    systems: List[str] = []
    turns: List[Tuple[str, List[Part]]] = []  # (role, parts); consecutive roles merged
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{index}] must be an object", "messages")
        role = message.get("role")
        if role in ("system", "developer"):
            systems.append(_text_only(message.get("content"), index))
        elif role in ("user", "assistant"):
            parts = (_user_parts(message.get("content"), index, images, carried) if role == "user"
                     else [{"text": _text_only(message.get("content"), index)}])
            if turns and turns[-1][0] == role:
                separator = [] if role == "user" else [{"text": "\n"}]
                turns[-1] = (role, turns[-1][1] + separator + parts)
            else:
                turns.append((role, parts))
        else:
            raise _bad(f"messages[{index}]: role {str(role)[:20]!r} is not supported (system, user, assistant)",
                       "messages")
    if not turns or turns[0][0] != "user" or turns[-1][0] != "user":
        raise _bad("the conversation must start and end with a user message", "messages")
    history = tuple((tuple(turns[i][1]), "".join(p["text"] for p in turns[i + 1][1]))
                    for i in range(0, len(turns) - 1, 2))
    system = "\n".join(systems) if systems else DEFAULT_SYSTEM
    return ChatRequest(query=tuple(turns[-1][1]), system=system, history=history)


def _count_images(messages: List[Any]) -> int:
    return sum(1 for message in messages if isinstance(message, dict) and isinstance(message.get("content"), list)
               for part in message["content"] if isinstance(part, dict) and part.get("type") == "image_url")


def _text_only(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(_text_of(p, index) for p in content)
    raise _bad(f"messages[{index}]: content must be text (images only in user messages)", "messages")


def _text_of(part: Dict[str, Any], index: int) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        raise _bad(f"messages[{index}]: a text part needs a string `text`", "messages")
    return text


def _user_parts(content: Any, index: int, images: RequestImages, carried: Dict[str, torch.Tensor]) -> List[Part]:
    if isinstance(content, str):
        if not content:
            raise _bad(f"messages[{index}]: empty user message", "messages")
        return [{"text": content}]
    if not isinstance(content, list) or not content:
        raise _bad(f"messages[{index}]: content must be a string or a non-empty list of parts", "messages")
    parts: List[Part] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"text": _text_of(part, index)})
        elif kind == "image_url":
            image_url = part.get("image_url")
            image = images.load(image_url.get("url") if isinstance(image_url, dict) else image_url)
            carried[image.name] = image.rgb
            parts.append({"image": image.name})
        else:
            raise _bad(f"messages[{index}]: part type {str(kind)[:20]!r} is not supported (text, image_url)",
                       "messages")
    return parts


# --- responses -----------------------------------------------------------------------------------

def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_body(prompt_tokens: int, completion_tokens: int) -> Dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(completion_id: str, model: str, text: str, finish_reason: str, prompt_tokens: int,
                    completion_tokens: int, created: Optional[int] = None) -> Dict[str, Any]:
    return {
        "id": completion_id, "object": "chat.completion", "created": created or int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": finish_reason}],
        "usage": usage_body(prompt_tokens, completion_tokens),
    }


def chunk_body(completion_id: str, model: str, created: int, delta: Dict[str, str],
               finish_reason: Optional[str] = None, include_usage: bool = False) -> Dict[str, Any]:
    chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if include_usage:
        chunk["usage"] = None  # as OpenAI: only the last chunk carries usage
    return chunk


def usage_chunk_body(completion_id: str, model: str, created: int, prompt_tokens: int,
                     completion_tokens: int) -> Dict[str, Any]:
    return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": usage_body(prompt_tokens, completion_tokens)}


def models_body(model: str, created: int) -> Dict[str, Any]:
    return {"object": "list", "data": [model_body(model, created)]}


def model_body(model: str, created: int) -> Dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "mmrole"}


def serving_context(tokenizer, request: ChatRequest, max_window_size: int) -> List[int]:
    """The prompt ids of a request: the chatml prompt `model.chat` builds, with every piece of client text
    (system, history, replies, query) encoded as plain text and image spans only for the image parts
    (see the module doc)."""
    from ..qwen_vl.chat_format import ListContent, make_context

    history = [(ListContent(tuple(turn)), ListContent.text(reply)) for turn, reply in request.history]
    return make_context(tokenizer, ListContent(request.query), history=history,
                        system=ListContent.text(request.system), max_window_size=max_window_size,
                        chat_format="chatml")[1]
