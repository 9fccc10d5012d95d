"""An OpenAI-compatible HTTP server over a local Qwen-VL-Chat-format checkpoint (MMRole-Agent, the
reward model, Qwen-VL-Chat itself, or a LoRA adapter on one of them).

    python -m mmrole.serve --model_path model_weights/MMRole-Agent [--port 8000]
    python serve.py ...                                   (the same, from the repository root)

Endpoints: POST /v1/chat/completions (text and image_url parts, system messages, multi-turn,
temperature/top_p/max_tokens/stop/seed, stream with server-sent events, usage counts),
GET /v1/models, GET /v1/models/<name>, GET /health. The `openai` client works unchanged:

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="...")
    client.chat.completions.create(model="MMRole-Agent", messages=[...], temperature=0)

Concurrent requests are batched (mmrole.serve_engine). It binds 127.0.0.1 unless told otherwise;
with an API key (from the environment variable --api_key_env or the file --api_key_file; never on
the command line, never logged) every /v1 request needs `Authorization: Bearer <key>`. Bad
requests get a 4xx answer with an OpenAI-shaped JSON error body; a client that disconnects is
logged as 499 and its generation stopped; no answer carries a stack trace or a server path.
Uses only the standard library's http.server (one thread per connection; the model runs on one
scheduler thread). For many users on GPUs put vLLM in its place (see the README).
"""

from __future__ import annotations

import argparse
import hmac
import http.server
import ipaddress
import json
import logging
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from .serve_api import (ApiError, CompletionRequest, ImageStore, ServeConfig, chunk_body, completion_body,
                        context_tokens, error_body, model_body, models_body, new_completion_id,
                        parse_completion_request, usage_chunk_body)
from .serve_engine import ChatEngine, EngineClosed, EngineOverloaded, Job

logger = logging.getLogger("mmrole.serve")

DEFAULT_API_KEY_ENV = "MMROLE_SERVE_API_KEY"
CLIENT_CLOSED = 499  # nginx's code for "the client closed the connection before the answer"
POLL_SECONDS = 0.25  # how often a waiting handler checks whether its client is still there


class ClientGone(Exception):
    """The client closed the connection."""


@dataclass
class ServeApp:
    """Everything a request handler needs: the settings, the engine, the image store."""

    config: ServeConfig
    engine: ChatEngine
    images: ImageStore
    created: int

    @property
    def backend(self):
        return self.engine.backend

    def prompt_ids(self, parsed: CompletionRequest):
        """The request's prompt ids; 400 when prompt + max_tokens exceed the context limit."""
        backend = self.backend
        generation_config = backend.model.generation_config
        ids = context_tokens(backend.tokenizer, backend.render(parsed.request), parsed.request.system,
                             generation_config.max_window_size)
        budget = parsed.params.max_new_tokens or generation_config.max_new_tokens
        if len(ids) + budget > self.config.max_context_tokens:
            raise ApiError(400, f"the prompt has {len(ids)} tokens; with max_tokens {budget} it exceeds the "
                           f"{self.config.max_context_tokens} tokens this server accepts",
                           code="context_length_exceeded", param="messages")
        return tuple(ids)


class Handler(http.server.BaseHTTPRequestHandler):
    """One connection. HTTP/1.1 keep-alive; streams use chunked transfer encoding."""

    protocol_version = "HTTP/1.1"
    server_version = "mmrole-serve"
    sys_version = ""  # no Python version in the Server header
    server: "Server"

    def setup(self) -> None:
        self.timeout = self.server.app.config.read_timeout  # slow or silent clients do not hold a thread
        super().setup()
        self._status = 0

    # --- dispatch ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _other_method(self) -> None:
        self._handle(lambda: self._raise(ApiError(405, f"method {self.command} is not allowed here",
                                                  headers={"Allow": "GET, POST"})))

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other_method

    def _raise(self, error: ApiError) -> None:
        raise error

    def _handle(self, action) -> None:
        started = time.monotonic()
        try:
            action()
        except ApiError as e:
            self._send_json(e.status, e.body(), e.headers)
        except ClientGone:
            self._status = CLIENT_CLOSED
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, socket.timeout):  # gone while we were writing
            self._status = CLIENT_CLOSED
            self.close_connection = True
        except Exception:  # noqa: BLE001  a bug must not leak: log it, answer a plain 500
            logger.exception("unexpected error on %s %s", self.command, self.path)
            if not self._status:
                self._send_json(500, error_body("internal server error (see the server log)", type="server_error"))
            self.close_connection = True
        logger.info('%s "%s %s" %s %.2fs', self.client_address[0], self.command, self.path.split("?")[0],
                    self._status, time.monotonic() - started)

    def _get(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        app = self.server.app
        if path == "/health":
            self._send_json(200, {"status": "ok"})
            return
        if path == "/v1/models":
            self._authorize()
            self._send_json(200, models_body(app.config.model_name, app.created))
            return
        if path.startswith("/v1/models/"):
            self._authorize()
            if path[len("/v1/models/"):] != app.config.model_name:
                raise ApiError(404, "The model does not exist", code="model_not_found")
            self._send_json(200, model_body(app.config.model_name, app.created))
            return
        raise ApiError(404, "unknown endpoint", code="not_found")

    def _post(self) -> None:
        if self.path.split("?")[0].rstrip("/") != "/v1/chat/completions":
            self.close_connection = True  # the body is not read
            raise ApiError(404, "unknown endpoint", code="not_found")
        self._authorize()
        body = self._read_json()
        app = self.server.app
        parsed = parse_completion_request(body, app.config, app.images)
        try:
            job = Job(parsed.request, parsed.params, app.prompt_ids(parsed), stream=parsed.stream)
        except BaseException:
            _release(app.images, parsed)
            raise
        job.on_leave = lambda: _release(app.images, parsed)
        try:
            app.engine.submit(job)
        except EngineOverloaded:
            job.drop()
            raise ApiError(503, "the server is busy; retry shortly", type="server_error", code="overloaded",
                           headers={"Retry-After": "1"}) from None
        except EngineClosed:
            job.drop()
            raise ApiError(503, "the server is shutting down", type="server_error", code="shutting_down") from None
        try:
            if parsed.stream:
                self._stream(job, parsed)
            else:
                self._answer(job)
        except BaseException:
            job.cancel()  # the engine drops it or stops its row, then releases its images
            raise

    # --- request pieces ---------------------------------------------------------------------------

    def _authorize(self) -> None:
        key = self.server.app.config.api_key
        if key is None:
            return
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            self.close_connection = True  # the body is not read
            message = "missing API key" if not header else "invalid API key"
            raise ApiError(401, f"{message}: send Authorization: Bearer <key>", code="invalid_api_key")

    def _read_json(self) -> Any:
        limit = self.server.app.config.max_request_bytes
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "send the body with a Content-Length (no chunked uploads)")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise ApiError(411, "a Content-Length header is required") from None
        if length < 0 or length > limit:
            self.close_connection = True
            raise ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
        data = self.rfile.read(length)
        if len(data) != length:
            raise ClientGone()
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None

    def handle_expect_100(self) -> bool:
        """Refuse an oversized or unauthorised upload before the client sends it."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if length > self.server.app.config.max_request_bytes:
            self._status = 413
            self._send_json(413, error_body("the request body is too large", code="request_too_large"))
            self.close_connection = True
            return False
        return super().handle_expect_100()

    def _client_gone(self) -> bool:
        """True when the peer has closed the connection (readable with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _answer(self, job: Job) -> None:
        while not job.done.wait(POLL_SECONDS):
            if self._client_gone():
                raise ClientGone()
        if job.error is not None:
            raise ApiError(500, job.error, type="server_error")
        result = job.result
        self._send_json(200, completion_body(new_completion_id(), self.server.app.config.model_name, result.text,
                                             result.finish_reason, result.prompt_tokens, result.completion_tokens))

    def _stream(self, job: Job, parsed: CompletionRequest) -> None:
        completion_id, created, model = new_completion_id(), int(time.time()), self.server.app.config.model_name
        self.send_response(200)
        self._status = 200
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        usage = parsed.include_usage
        self._event(chunk_body(completion_id, model, created, {"role": "assistant", "content": ""}, None, usage))
        while True:
            try:
                kind, payload = job.events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self._client_gone():
                    raise ClientGone() from None
                continue
            if kind == "delta":
                self._event(chunk_body(completion_id, model, created, {"content": payload}, None, usage))
            elif kind == "error":
                self._event(error_body(str(payload), type="server_error"))
                break
            else:
                self._event(chunk_body(completion_id, model, created, {}, payload.finish_reason, usage))
                if usage:
                    self._event(usage_chunk_body(completion_id, model, created, payload.prompt_tokens,
                                                 payload.completion_tokens))
                break
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    # --- writing ----------------------------------------------------------------------------------

    def _event(self, payload: Dict[str, Any]) -> None:
        self._chunk(b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")

    def _send_json(self, status: int, payload: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """http.server's own errors (bad request line, oversized headers, ...) as JSON too."""
        self.close_connection = True
        try:
            self._send_json(code, error_body(message or "bad request"))
        except OSError:
            pass

    def log_request(self, code="-", size="-") -> None:  # we log once per request in _handle
        pass

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.client_address[0], format % args)


def _release(images: ImageStore, parsed: CompletionRequest) -> None:
    for path in parsed.images:
        images.release(path)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, app: ServeApp):
        self.app = app
        super().__init__(address, Handler)


@dataclass
class RunningServer:
    """A server answering on a background thread (tests, notebooks)."""

    server: Server
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def app(self) -> ServeApp:
        return self.server.app

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.app.engine.close()
        self.app.images.close()
        self.thread.join(10)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def build_server(backend, config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000,
                 max_batch_size: int = 8, batch_wait: float = 0.01, max_queue: int = 256,
                 image_cache_dir: Optional[os.PathLike] = None) -> Server:
    """A Server over an HFBackend (model + tokenizer); call serve_forever() or use start_server."""
    engine = ChatEngine(backend, max_batch_size=max_batch_size, batch_wait=batch_wait, max_queue=max_queue)
    images = ImageStore(image_cache_dir, max_pixels=config.max_image_pixels,
                        allowed_local_root=config.allowed_local_media_path)
    try:
        server = Server((host, port), ServeApp(config, engine, images, int(time.time())))
    except OSError:  # e.g. the port is taken: leave nothing behind
        images.close()
        raise
    engine.start()
    return server


def start_server(backend, config: ServeConfig, **options: Any) -> RunningServer:
    """build_server + serve_forever on a daemon thread; port 0 picks a free port."""
    server = build_server(backend, config, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="mmrole-serve",
                              daemon=True)
    thread.start()
    return RunningServer(server, thread)


# --- command line --------------------------------------------------------------------------------

def read_api_key(env_name: Optional[str], key_file: Optional[str]) -> Optional[str]:
    """The API key from a file (first line) or an environment variable; None when neither is set."""
    if key_file:
        key = Path(key_file).read_text(encoding="utf-8").strip()
        if not key:
            raise ValueError(f"{key_file} is empty")
        return key
    return (os.environ.get(env_name) or None) if env_name else None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mmrole.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model_path", required=True, help="Qwen-VL-Chat-format folder, or a LoRA adapter folder")
    model.add_argument("--use_lora", action="store_true", help="--model_path holds a LoRA adapter (also detected)")
    model.add_argument("--served_model_name", default=None,
                       help="the name clients send as `model` (default: the folder's name)")
    model.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    model.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default float32 on cpu)")
    net = parser.add_argument_group("network and security")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    net.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    net.add_argument("--api_key_env", default=DEFAULT_API_KEY_ENV,
                     help=f"environment variable holding the API key clients must send (default {DEFAULT_API_KEY_ENV}; "
                          "unset = no key required)")
    net.add_argument("--api_key_file", default=None, help="file whose first line is the API key (instead of the env)")
    net.add_argument("--allowed_local_media_path", default=None,
                     help="folder whose image files clients may name by path (file://...); default: data URLs only")
    net.add_argument("--image_cache_dir", default=None,
                     help="where request images are written while in use (default: a private temporary folder)")
    limits = parser.add_argument_group("limits and batching")
    limits.add_argument("--max_request_mb", type=float, default=20.0, help="largest request body (default 20 MB)")
    limits.add_argument("--max_images", type=int, default=8, help="images per request (default 8)")
    limits.add_argument("--max_image_pixels", type=int, default=4096 * 4096, help="pixels per image (default 4096^2)")
    limits.add_argument("--max_tokens_limit", type=int, default=2048, help="largest max_tokens accepted (default 2048)")
    limits.add_argument("--max_context_tokens", type=int, default=8192,
                        help="prompt + max_tokens at most this (default 8192, Qwen-VL-Chat's model_max_length)")
    limits.add_argument("--max_batch_size", type=int, default=8, help="requests per forward pass (default 8)")
    limits.add_argument("--batch_wait_ms", type=float, default=10.0,
                        help="how long the first request waits for others to join its batch (default 10 ms)")
    limits.add_argument("--max_queue", type=int, default=256, help="waiting requests before 503 (default 256)")
    limits.add_argument("--read_timeout", type=float, default=60.0, help="seconds a silent client may hold a connection")
    parser.add_argument("--log_level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return parser.parse_args(argv)


def _warn_if_exposed(host: str, has_key: bool) -> None:
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        loopback = False
    if not loopback and not has_key:
        logger.warning("binding %s without an API key: anyone who can reach this port can use the model", host)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        api_key = read_api_key(args.api_key_env, args.api_key_file)
    except (OSError, ValueError) as e:
        print(f"error: cannot read the API key file: {e}", file=sys.stderr)
        return 2
    from .backends.hf import HFBackend

    try:
        backend = HFBackend(args.model_path, use_lora=args.use_lora, device=args.device, dtype=args.dtype)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = ServeConfig(
        model_name=args.served_model_name or Path(args.model_path).resolve().name, api_key=api_key,
        max_request_bytes=int(args.max_request_mb * 2**20), max_images=args.max_images,
        max_image_pixels=args.max_image_pixels, max_tokens_limit=args.max_tokens_limit,
        max_context_tokens=args.max_context_tokens, read_timeout=args.read_timeout,
        allowed_local_media_path=Path(args.allowed_local_media_path) if args.allowed_local_media_path else None)
    _warn_if_exposed(args.host, api_key is not None)
    try:
        server = build_server(backend, config, host=args.host, port=args.port, max_batch_size=args.max_batch_size,
                              batch_wait=args.batch_wait_ms / 1000, max_queue=args.max_queue,
                              image_cache_dir=args.image_cache_dir)
    except (OSError, ValueError) as e:  # port in use, unusable cache folder, bad limits
        print(f"error: {e}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    # One line on stdout that scripts can wait for (demo.sh, tests).
    print(f"serving {config.model_name} at http://{host}:{port}/v1 (api key {'required' if api_key else 'not required'})",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    stop.wait()
    logger.info("shutting down")
    server.shutdown()
    server.server_close()
    server.app.engine.close()
    server.app.images.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
