"""A local OpenAI-compatible chat-completions server for tests (127.0.0.1, a free port, no network).

It answers `POST /v1/chat/completions` (non-streaming, and streaming as server-sent events) and
`GET /v1/models`, records every request it receives, and can be told to misbehave on chosen calls.

    from tests.support.openai_stub import OpenAIStub, StubReply, Fault

    def responder(request):                     # RecordedRequest -> str | StubReply
        return "Hello" if request.model == "m" else StubReply("cut", finish_reason="length")

    with OpenAIStub(responder) as stub:         # or stub = OpenAIStub(...).start(); stub.stop()
        stub.fail_next(Fault.RATE_LIMIT, Fault.MALFORMED_JSON)   # the next two completion calls fail
        stub.fail_when(lambda r: "Iron Man" in r.system_prompt, Fault.TIMEOUT, times=1)
        client = ChatClient("m", base_url=stub.base_url, api_key="sk-test")
        ...
        assert stub.completion_requests[0].has_image_data_url

Faults (`Fault.*`): RATE_LIMIT (429 with Retry-After: 0), SERVER_ERROR (500), MALFORMED_JSON (200 with a
body that is not JSON), TRUNCATED (200 whose JSON body is cut in half, Content-Length matching the
cut), INCOMPLETE (200 announcing more bytes than it sends, then closing), TIMEOUT (answer only after
`timeout_delay` seconds), DISCONNECT (close the connection without an answer), EMPTY_CHOICES (a
valid response without choices), UNAUTHORIZED (401 whose message quotes the key it was sent, as
OpenAI's does: a client must not pass it on), FORBIDDEN (403), UNKNOWN_MODEL (404, "the model does not
exist", as OpenAI answers an unknown model), BAD_REQUEST (400: this request only). `Fault.TRANSIENT`
lists those a client should retry, `Fault.PERMANENT` the others. A call that gets a fault is still
recorded (`RecordedRequest.fault`).

The responder sees the parsed request; the default responder echoes the last user text. It can
return a plain string (the assistant content), a `StubReply` (content, finish_reason, usage), or
raise: the server then answers 500 with the exception text, like a broken backend would.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Union

__all__ = ["OpenAIStub", "RecordedRequest", "StubReply", "Fault"]


class Fault:
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    MALFORMED_JSON = "malformed_json"
    TRUNCATED = "truncated"
    INCOMPLETE = "incomplete"
    TIMEOUT = "timeout"
    DISCONNECT = "disconnect"
    EMPTY_CHOICES = "empty_choices"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNKNOWN_MODEL = "unknown_model"
    BAD_REQUEST = "bad_request"
    TRANSIENT = (RATE_LIMIT, SERVER_ERROR, MALFORMED_JSON, TRUNCATED, INCOMPLETE, TIMEOUT, DISCONNECT,
                 EMPTY_CHOICES)  # those a client should retry
    PERMANENT = (UNAUTHORIZED, FORBIDDEN, UNKNOWN_MODEL, BAD_REQUEST)
    ALL = TRANSIENT + PERMANENT


@dataclass
class StubReply:
    content: str
    finish_reason: str = "stop"
    prompt_tokens: Optional[int] = None  # default: a rough count of the request's characters / 4
    completion_tokens: Optional[int] = None  # default: len(content) / 4


@dataclass
class RecordedRequest:
    """One HTTP request as the server saw it."""

    index: int  # order of arrival over all requests
    method: str
    path: str
    headers: Dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None
    fault: Optional[str] = None  # the fault injected into the answer, if any

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")

    @property
    def model(self) -> Optional[str]:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def messages(self) -> List[dict]:
        messages = self.body.get("messages") if isinstance(self.body, dict) else None
        return messages if isinstance(messages, list) else []

    @property
    def stream(self) -> bool:
        return bool(isinstance(self.body, dict) and self.body.get("stream"))

    def texts(self, role: str) -> List[str]:
        """The text of every message of `role`, text parts joined by newlines."""
        return [_text_of(m.get("content")) for m in self.messages if m.get("role") == role]

    @property
    def system_prompt(self) -> Optional[str]:
        systems = self.texts("system")
        return systems[0] if systems else None

    @property
    def user_text(self) -> str:
        """The text of the last user message."""
        users = self.texts("user")
        return users[-1] if users else ""

    @property
    def image_urls(self) -> List[str]:
        urls = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "image_url":
                        image = part.get("image_url")
                        urls.append(image.get("url", "") if isinstance(image, dict) else str(image))
        return urls

    @property
    def has_image_data_url(self) -> bool:
        return any(url.startswith("data:image/") and ";base64," in url for url in self.image_urls)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def echo_responder(request: RecordedRequest) -> str:
    return f"echo: {request.user_text}"


Responder = Callable[[RecordedRequest], Union[str, StubReply]]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests` instead
        pass

    def _record(self, body: Any) -> RecordedRequest:
        headers = {k.lower(): v for k, v in self.headers.items()}
        return self.server.stub._record(self.command, self.path, headers, body)

    def do_GET(self) -> None:
        self._record(None)
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "stub-model", "object": "model", "owned_by": "stub"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        request = self._record(body)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_json(400, {"error": {"message": "body must be JSON with `messages`", "type": "invalid_request_error"}})
            return
        self.server.stub._last_model = request.model
        request.fault = self.server.stub._take_fault(request)
        if request.fault:
            self._send_fault(request.fault)
            return
        try:
            reply = self.server.stub.responder(request)
        except Exception as e:  # a broken responder looks like a broken backend: 500
            self._send_json(500, {"error": {"message": f"responder failed: {e}", "type": "server_error"}})
            return
        if isinstance(reply, str):
            reply = StubReply(reply)
        if request.stream:
            self._send_stream(request, reply)
        else:
            self._send_json(200, self.server.stub._completion(request, reply))

    # --- answers ---------------------------------------------------------------------------------

    def _send_bytes(self, status: int, payload: bytes, content_type: str = "application/json",
                    length: Optional[int] = None, headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload) if length is None else length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send_json(self, status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> None:
        self._send_bytes(status, json.dumps(obj).encode("utf-8"), headers=headers)

    def _send_fault(self, fault: str) -> None:
        stub = self.server.stub
        good = json.dumps(stub._completion(None, StubReply("this answer never arrives"))).encode("utf-8")
        if fault == Fault.RATE_LIMIT:
            self._send_json(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}},
                            headers={"Retry-After": "0"})
        elif fault == Fault.SERVER_ERROR:
            self._send_json(500, {"error": {"message": "The server had an error", "type": "server_error"}})
        elif fault == Fault.MALFORMED_JSON:
            self._send_bytes(200, b"<html>502 Bad Gateway</html>")
        elif fault == Fault.TRUNCATED:
            self._send_bytes(200, good[: len(good) // 2])
        elif fault == Fault.INCOMPLETE:
            self._send_bytes(200, good[: len(good) // 2], length=len(good))
            self.close_connection = True
        elif fault == Fault.TIMEOUT:
            stub._stopping.wait(stub.timeout_delay)
            self._send_bytes(200, good)
        elif fault == Fault.DISCONNECT:
            self.close_connection = True
        elif fault == Fault.UNAUTHORIZED:
            key = self.headers.get("Authorization", "").replace("Bearer ", "")
            self._send_json(401, {"error": {"message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error",
                                            "code": "invalid_api_key"}})
        elif fault == Fault.FORBIDDEN:
            self._send_json(403, {"error": {"message": "You do not have access to this model.",
                                            "type": "invalid_request_error", "code": "model_not_allowed"}})
        elif fault == Fault.UNKNOWN_MODEL:
            model = (self.server.stub._last_model or "")
            self._send_json(404, {"error": {"message": f"The model `{model}` does not exist or you do not have "
                                                       "access to it.", "type": "invalid_request_error",
                                            "code": "model_not_found"}})
        elif fault == Fault.BAD_REQUEST:
            self._send_json(400, {"error": {"message": "Invalid image data.", "type": "invalid_request_error"}})
        elif fault == Fault.EMPTY_CHOICES:
            obj = json.loads(good)
            obj["choices"] = []
            self._send_json(200, obj)
        else:
            raise ValueError(f"unknown fault {fault!r}")

    def _send_stream(self, request: RecordedRequest, reply: StubReply) -> None:
        """Server-sent events as the API streams them: role, content pieces, finish, [DONE]."""
        stub = self.server.stub
        base = {"id": f"chatcmpl-stub-{request.index}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": request.model or "stub-model"}
        pieces = [reply.content[i:i + 16] for i in range(0, len(reply.content), 16)] or [""]
        chunks = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
        chunks += [dict(base, choices=[{"index": 0, "delta": {"content": p}, "finish_reason": None}]) for p in pieces]
        chunks.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]))
        if (request.body.get("stream_options") or {}).get("include_usage"):
            chunks.append(dict(base, choices=[], usage=stub._usage(request, reply)))
        payload = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self._send_bytes(200, payload.encode("utf-8"), content_type="text/event-stream")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    stub: "OpenAIStub"


class OpenAIStub:
    """The server. `requests` lists every request received; `completion_requests` only chat calls."""

    def __init__(self, responder: Optional[Responder] = None, *, timeout_delay: float = 3.0):
        self.responder: Responder = responder or echo_responder
        self.timeout_delay = timeout_delay  # how long a TIMEOUT fault keeps the client waiting
        self._lock = threading.Lock()
        self._requests: List[RecordedRequest] = []
        self._queued_faults: List[str] = []
        self._conditional_faults: List[list] = []  # [predicate, fault, remaining times]
        self._stopping = threading.Event()
        self._last_model: Optional[str] = None
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "OpenAIStub":
        self._server = _Server(("127.0.0.1", 0), _Handler)  # port 0: the OS picks a free one
        self._server.stub = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "OpenAIStub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the stub first"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- faults ----------------------------------------------------------------------------------

    def fail_next(self, *faults: str) -> None:
        """The next len(faults) chat-completion calls get these faults, in order."""
        for fault in faults:
            if fault not in Fault.ALL:
                raise ValueError(f"unknown fault {fault!r}; expected one of {Fault.ALL}")
        with self._lock:
            self._queued_faults.extend(faults)

    def fail_when(self, predicate: Callable[[RecordedRequest], bool], fault: str, *, times: int = 1) -> None:
        """The next `times` chat-completion calls for which predicate(request) holds get `fault`."""
        if fault not in Fault.ALL:
            raise ValueError(f"unknown fault {fault!r}; expected one of {Fault.ALL}")
        with self._lock:
            self._conditional_faults.append([predicate, fault, times])

    def _take_fault(self, request: RecordedRequest) -> Optional[str]:
        with self._lock:
            for entry in self._conditional_faults:
                predicate, fault, remaining = entry
                if remaining > 0 and predicate(request):
                    entry[2] -= 1
                    return fault
            if self._queued_faults:
                return self._queued_faults.pop(0)
        return None

    # --- records ---------------------------------------------------------------------------------

    def _record(self, method: str, path: str, headers: Dict[str, str], body: Any) -> RecordedRequest:
        with self._lock:
            request = RecordedRequest(len(self._requests), method, path, headers, body)
            self._requests.append(request)
        return request

    @property
    def requests(self) -> List[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def completion_requests(self) -> List[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.rstrip("/").endswith("/chat/completions")]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._queued_faults.clear()
            self._conditional_faults.clear()

    # --- response bodies -------------------------------------------------------------------------

    @staticmethod
    def _usage(request: Optional[RecordedRequest], reply: StubReply) -> dict:
        request_chars = len(json.dumps(request.messages)) if request is not None else 0
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else max(1, request_chars // 4)
        completion = reply.completion_tokens if reply.completion_tokens is not None else max(1, len(reply.content) // 4)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _completion(self, request: Optional[RecordedRequest], reply: StubReply) -> dict:
        return {
            "id": f"chatcmpl-stub-{request.index if request else 'x'}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": (request.model if request else None) or "stub-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content},
                         "finish_reason": reply.finish_reason}],
            "usage": self._usage(request, reply),
        }
