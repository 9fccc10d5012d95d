"""The OpenAI chat-completions protocol of mmrole.serve: request validation, Qwen-VL mapping, images,
response bodies and error bodies. No HTTP here (see mmrole.serve) and no model calls (mmrole.serve_engine).

Mapping onto the Qwen-VL chat format (what `model.chat(tokenizer, query, history, system)` takes):
- every `system` (or `developer`) message, in order, joined by a newline, is the system prompt
  (none: Qwen-VL-Chat's default "You are a helpful assistant.");
- the other messages alternate user / assistant (consecutive messages of one role are merged) and
  end with a user message: each earlier (user, assistant) pair is a history turn, the last user
  message is the query;
- a user message's parts keep their order: text parts as text, `image_url` parts as images, so an
  image of an earlier turn stays in that turn. Each turn is rendered with `from_list_format`
  (`Picture N: <img>PATH</img>\\n`), exactly as the `hf` backend renders a ChatRequest.

Images arrive as base64 data URLs (PNG, JPEG, GIF, WebP, BMP) and are written to a cache folder
under a name derived from their bytes, because Qwen-VL reads images from the path written in the
prompt; the same image always gets the same path, so the same request always gets the same
prompt. Local file paths (`file://...` or a plain path) are accepted only under
`allowed_local_media_path` (off by default). Remote URLs are refused: the server downloads nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlparse

from PIL import Image

from .backends.base import ChatRequest, GenerationParams, Part
from .prompts import DEFAULT_SYSTEM
from .qwen_vl.tokenization_qwen import IMAGE_SPAN_LENGTH as MAX_IMAGE_PATH_BYTES  # a path fills <img>...</img>

IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}
# Tags that would make the model open a file named in the text: user text must not contain them.
FORBIDDEN_TAGS = ("<img>", "</img>", "<imgpad>")
MAX_STOP_STRINGS = 4  # as OpenAI
MAX_MESSAGES = 256


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
    """What the server accepts. api_key None = no authentication (fine on 127.0.0.1 only)."""

    model_name: str
    api_key: Optional[str] = field(default=None, repr=False)
    max_request_bytes: int = 20 * 2**20
    max_images: int = 8
    max_image_pixels: int = 4096 * 4096
    max_tokens_limit: int = 2048
    max_context_tokens: int = 8192
    allowed_local_media_path: Optional[Path] = None
    read_timeout: float = 60.0


# --- images --------------------------------------------------------------------------------------

class ImageStore:
    """Request images as local files, named by content and deleted when no request uses them."""

    def __init__(self, folder: Optional[os.PathLike] = None, *, max_pixels: int = 4096 * 4096,
                 allowed_local_root: Optional[os.PathLike] = None):
        self.owns_folder = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="mmrole-serve-images-") if folder is None else folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        longest = len(self._path_of("0" * 64, max(IMAGE_FORMATS.values(), key=len)).encode("utf-8"))
        if longest > MAX_IMAGE_PATH_BYTES:  # the path goes between <img> and </img> in the prompt
            raise ValueError(f"image cache folder {self.folder} is too long: image paths would take {longest} bytes, "
                             f"Qwen-VL allows {MAX_IMAGE_PATH_BYTES}")
        self.max_pixels = max_pixels
        self.allowed_local_root = Path(allowed_local_root).resolve() if allowed_local_root else None
        self._lock = threading.Lock()
        self._users: Dict[str, int] = {}

    def acquire(self, url: str) -> Tuple[str, bool]:
        """The local path of an image_url, and whether it must be released after the request."""
        if not isinstance(url, str) or not url:
            raise _bad("image_url.url must be a non-empty string", "messages")
        if url.startswith("data:"):
            return self._store(_decode_data_url(url)), True
        scheme = urlparse(url).scheme.lower()
        if scheme in ("http", "https", "ftp"):
            raise _bad("remote image URLs are not supported: send the image as a base64 data URL", "messages")
        if scheme not in ("", "file"):
            raise _bad("image_url.url must be a base64 data URL", "messages")
        return self._local(url), False

    def release(self, path: str) -> None:
        with self._lock:
            users = self._users.get(path, 0) - 1
            if users > 0:
                self._users[path] = users
                return
            self._users.pop(path, None)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self.owns_folder:
            for leftover in self.folder.glob("*"):
                leftover.unlink(missing_ok=True)
            self.folder.rmdir()

    def _path_of(self, digest: str, extension: str) -> str:
        """Where an image is cached: named by (a prefix of) its content digest."""
        return str(self.folder / f"{digest[:32]}.{extension}")

    def _store(self, data: bytes) -> str:
        extension = IMAGE_FORMATS[check_image(BytesIO(data), self.max_pixels)]
        path = self._path_of(hashlib.sha256(data).hexdigest(), extension)
        with self._lock:
            self._users[path] = self._users.get(path, 0) + 1
            if not os.path.exists(path):  # written under the lock: a second user never sees half a file
                partial = f"{path}.{uuid.uuid4().hex}.part"
                with open(partial, "wb") as handle:
                    handle.write(data)
                os.replace(partial, path)
        return path

    def _local(self, url: str) -> str:
        if self.allowed_local_root is None:
            raise ApiError(400, "local image paths are not allowed on this server; send a base64 data URL "
                           "(the operator can allow a folder with --allowed_local_media_path)", param="messages")
        raw = unquote(urlparse(url).path) if url.lower().startswith("file:") else url
        try:
            path = Path(raw).resolve(strict=True)
        except (OSError, RuntimeError):
            raise _bad("the image file does not exist", "messages") from None
        if not path.is_file() or not path.is_relative_to(self.allowed_local_root):
            raise _bad("the image path is not a file inside the allowed folder", "messages")
        if len(str(path).encode("utf-8")) > MAX_IMAGE_PATH_BYTES:
            raise _bad(f"the image path is longer than {MAX_IMAGE_PATH_BYTES} bytes", "messages")
        check_image(path, self.max_pixels)
        return str(path)


def _decode_data_url(url: str) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise _bad("an image data URL must look like data:image/<type>;base64,<data>", "messages")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("the image data URL is not valid base64", "messages") from None


def check_image(source, max_pixels: int) -> str:
    """The PIL format of a complete, readable image of at most max_pixels; ApiError(400) otherwise."""
    try:
        with Image.open(source) as image:
            if image.format not in IMAGE_FORMATS:
                raise _bad(f"unsupported image format; send one of {', '.join(IMAGE_FORMATS)}", "messages")
            width, height = image.size
            if width * height > max_pixels:
                raise _bad(f"the image has {width}x{height} pixels; at most {max_pixels} are accepted", "messages")
            image.load()  # decode it all now: a truncated file fails here, not inside a batch
            return image.format
    except ApiError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        raise _bad("image_url does not hold a readable image", "messages", code="invalid_image") from None


# --- requests ------------------------------------------------------------------------------------

@dataclass
class CompletionRequest:
    """A validated chat-completions request. `images` must be released when the request is done."""

    request: ChatRequest
    params: GenerationParams
    stream: bool = False
    include_usage: bool = False
    images: List[str] = field(default_factory=list)


def parse_completion_request(body: Any, config: ServeConfig, images: ImageStore) -> CompletionRequest:
    """Validate a request body and map it onto Qwen-VL. Images acquired before an error are released."""
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
    acquired: List[str] = []
    try:
        request = chat_request(body.get("messages"), images, acquired, config.max_images)
    except BaseException:
        for path in acquired:
            images.release(path)
        raise
    return CompletionRequest(request, params, stream, include_usage, acquired)


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
    """temperature 0 = greedy; absent fields = the checkpoint's generation_config.json."""
    temperature = _optional(body, "temperature", float, None)
    if temperature is not None and not 0 <= temperature <= 2:
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
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, list) else () if stop is None else None
    if stops is None or len(stops) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in stops):
        raise _bad(f"`stop` must be a non-empty string or a list of at most {MAX_STOP_STRINGS} of them", "stop")
    greedy = temperature == 0
    return GenerationParams(greedy=greedy, max_new_tokens=max_tokens, temperature=None if greedy else temperature,
                            top_p=None if greedy else top_p, stop=stops, seed=seed)


def chat_request(messages: Any, images: ImageStore, acquired: List[str], max_images: int) -> ChatRequest:
    """OpenAI messages -> ChatRequest(query parts, system, history of (parts, reply))."""
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
            parts = (_user_parts(message.get("content"), index, images, acquired) if role == "user"
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
        return _checked_text(content, index)
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(_checked_text(p.get("text"), index) for p in content)
    raise _bad(f"messages[{index}]: content must be text (images only in user messages)", "messages")


def _checked_text(text: Any, index: int) -> str:
    if not isinstance(text, str):
        raise _bad(f"messages[{index}]: a text part needs a string `text`", "messages")
    if any(tag in text for tag in FORBIDDEN_TAGS):
        raise _bad(f"messages[{index}]: text must not contain {', '.join(FORBIDDEN_TAGS)}; "
                   "send images as image_url parts", "messages")
    return text


def _user_parts(content: Any, index: int, images: ImageStore, acquired: List[str]) -> List[Part]:
    if isinstance(content, str):
        if not content:
            raise _bad(f"messages[{index}]: empty user message", "messages")
        return [{"text": _checked_text(content, index)}]
    if not isinstance(content, list) or not content:
        raise _bad(f"messages[{index}]: content must be a string or a non-empty list of parts", "messages")
    parts: List[Part] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"text": _checked_text(part.get("text"), index)})
        elif kind == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            path, release = images.acquire(url)
            if release:
                acquired.append(path)
            parts.append({"image": path})
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


def context_tokens(tokenizer, rendered: Tuple[str, Sequence[Tuple[str, str]]], system: str,
                   max_window_size: int) -> List[int]:
    """The prompt ids Qwen-VL-Chat's chat() builds for this request (make_context, chatml)."""
    from .qwen_vl.chat_format import make_context

    query, history = rendered
    return make_context(tokenizer, query, history=list(history), system=system, max_window_size=max_window_size,
                        chat_format="chatml")[1]
