"""An OpenAI-compatible HTTP server over a local Qwen-VL-Chat-format checkpoint (MMRole-Agent, the
reward model, Qwen-VL-Chat itself, or a LoRA adapter on one of them).

    python -m mmrole.serve --model_path model_weights/MMRole-Agent [--port 8000]
    python serve.py ...                                   (the same, from the repository root)

Endpoints: POST /v1/chat/completions (text and image_url parts, system messages, multi-turn,
temperature/top_p/max_tokens/stop/seed, stream with server-sent events, usage counts),
GET /v1/models, GET /v1/models/<name>, GET /health. The `openai` client works unchanged:

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="...")
    client.chat.completions.create(model="MMRole-Agent", messages=[...], temperature=0)

FastAPI on uvicorn (HTTP/1.1, h11) with connection limits (mmrole.serve.http); concurrent requests
decode together with continuous batching, the engine inference and review use (mmrole.serve.engine).
Client text is always plain text: the model sees only the images a request carries as image_url parts
(mmrole.serve.api). It binds 127.0.0.1 unless told otherwise; with an API key (from the environment
variable --api_key_env or the first non-empty line of --api_key_file; never on the command line, never
logged) every /v1 request needs `Authorization: Bearer <key>`. Bad requests get a 4xx answer with an
OpenAI-shaped JSON error body; a client that disconnects is logged as 499 and its generation stopped;
no answer carries a stack trace or a server path. One process serves one model copy; run several
behind a load balancer for more (docs/serving.md).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..common.cli import ArgumentParser, add_hidden_alias  # no abbreviations, no keys on the command line
from .api import (ApiError, CompletionRequest, RequestImages, ServeConfig, chunk_body, completion_body, error_body,
                  model_body, models_body, new_completion_id, parse_completion_request, serving_context,
                  usage_chunk_body)
from .engine import ChatEngine, Completion, EngineClosed, EngineOverloaded, Job

logger = logging.getLogger("mmrole.serve")

DEFAULT_API_KEY_ENV = "MMROLE_SERVE_API_KEY"
LISTEN_BACKLOG = 2048  # uvicorn's default


class ClientGone(Exception):
    """The client closed the connection before its answer."""


@dataclass
class ServeApp:
    """Everything a request needs: the settings, the engine, the image loader."""

    config: ServeConfig
    engine: ChatEngine
    images: RequestImages
    created: int

    @property
    def backend(self):
        return self.engine.backend

    def prepare(self, body: bytes) -> Tuple[CompletionRequest, Job]:
        """A request body -> its validated request and the engine job answering it (CPU work: JSON, images,
        tokens; run it off the event loop). ApiError for anything the client got wrong."""
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
        parsed = parse_completion_request(payload, self.config, self.images)
        job = Job(parsed.request, parsed.params, self.prompt_ids(parsed), images=parsed.images, stream=parsed.stream)
        return parsed, job

    def prompt_ids(self, parsed: CompletionRequest) -> Tuple[int, ...]:
        """The request's prompt ids; 400 when prompt + max_tokens exceed the context limit."""
        generation_config = self.backend.model.generation_config
        ids = serving_context(self.backend.tokenizer, parsed.request, generation_config.max_window_size)
        budget = parsed.params.max_new_tokens or generation_config.max_new_tokens
        if len(ids) + budget > self.config.max_context_tokens:
            raise ApiError(400, f"the prompt has {len(ids)} tokens; with max_tokens {budget} it exceeds the "
                           f"{self.config.max_context_tokens} tokens this server accepts",
                           code="context_length_exceeded", param="messages")
        return tuple(ids)


# --- the HTTP application ------------------------------------------------------------------------

def create_app(serve_app: ServeApp):
    """The FastAPI application (wrapped in http.HttpGuard) answering the endpoints of the module doc."""
    from .http import HttpGuard

    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)  # the OpenAI API only
    config = serve_app.config

    @api.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return json_response(error.status, error.body(), error.headers)

    @api.exception_handler(HTTPException)
    async def routing_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 405:
            return json_response(405, error_body(f"method {request.method} is not allowed here"), error.headers)
        if error.status_code == 404:
            return json_response(404, error_body("unknown endpoint", code="not_found"))
        return json_response(error.status_code, error_body(str(error.detail)), error.headers)

    @api.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> Response:  # logged by HttpGuard
        return json_response(500, error_body("internal server error (see the server log)", type="server_error"))

    @api.get("/health")
    async def health() -> Response:
        return json_response(200, {"status": "ok"})

    @api.get("/v1/models")
    async def models(request: Request) -> Response:
        _authorize(request, config.api_key)
        return json_response(200, models_body(config.model_name, serve_app.created))

    @api.get("/v1/models/{name:path}")
    async def model(request: Request, name: str) -> Response:
        _authorize(request, config.api_key)
        if name != config.model_name:
            raise ApiError(404, "The model does not exist", code="model_not_found")
        return json_response(200, model_body(config.model_name, serve_app.created))

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        _authorize(request, config.api_key)
        body = await _read_body(request, config)
        parsed, job = await run_in_threadpool(serve_app.prepare, body)
        events = _deliver_to_loop(job)
        _submit(serve_app.engine, job)
        if parsed.stream:
            return StreamingResponse(_sse(job, events, parsed, config.model_name, request.scope),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                                     background=BackgroundTask(_cancel_unless_answered, job, request.scope))
        try:
            completion = await _completion(job, events, request)
        except ClientGone:
            request.scope["mmrole.client_gone"] = True
            job.cancel()  # the engine drops it, or ends its row at the next token
            return Response(status_code=204)  # never sent: the client is gone
        except BaseException:
            job.cancel()
            raise
        return json_response(200, completion_body(new_completion_id(), config.model_name, completion.text,
                                                  completion.finish_reason, completion.prompt_tokens,
                                                  completion.completion_tokens))

    return HttpGuard(api, config.max_header_bytes)


def json_response(status: int, payload: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> Response:
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Response(content=data, status_code=status, media_type="application/json", headers=headers)


def _authorize(request: Request, key: Optional[str]) -> None:
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        message = "missing API key" if not header else "invalid API key"
        raise ApiError(401, f"{message}: send Authorization: Bearer <key>", code="invalid_api_key")


async def _read_body(request: Request, config: ServeConfig) -> bytes:
    """The body, of at most max_request_bytes, read within body_timeout seconds of the request head."""
    if request.headers.get("transfer-encoding"):
        raise ApiError(411, "send the body with a Content-Length (no chunked uploads)")
    try:
        length = int(request.headers.get("content-length", ""))
    except ValueError:
        raise ApiError(411, "a Content-Length header is required") from None
    if length < 0 or length > config.max_request_bytes:
        raise ApiError(413, f"the request body is larger than {config.max_request_bytes} bytes",
                       code="request_too_large")
    try:
        return await asyncio.wait_for(request.body(), config.body_timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {config.body_timeout:g} s",
                       code="request_timeout") from None
    except ClientDisconnect:
        request.scope["mmrole.client_gone"] = True
        raise ApiError(400, "the client closed the connection before its body arrived") from None


def _deliver_to_loop(job: Job) -> "asyncio.Queue":
    """Route the job's events (posted by the engine's thread) into an asyncio queue of this event loop."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def deliver(event) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the loop has closed (shutdown): nobody is waiting
            pass

    job.deliver = deliver
    return events


def _submit(engine: ChatEngine, job: Job) -> None:
    try:
        engine.submit(job)
    except EngineOverloaded:
        raise ApiError(503, "the server is busy; retry shortly", type="server_error", code="overloaded",
                       headers={"Retry-After": "1"}) from None
    except EngineClosed:
        raise ApiError(503, "the server is shutting down", type="server_error", code="shutting_down") from None


async def _completion(job: Job, events: "asyncio.Queue", request: Request) -> Completion:
    """The job's answer; ClientGone when the client disconnects first."""
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        while True:
            get = asyncio.ensure_future(events.get())
            await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                raise ClientGone()
            kind, payload = get.result()
            if kind == "done":
                return payload
            if kind == "error":
                raise ApiError(500, str(payload), type="server_error")
    finally:
        gone.cancel()


async def _disconnected(receive: Callable) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _sse(job: Job, events: "asyncio.Queue", parsed: CompletionRequest, model: str,
               scope: Dict[str, Any]) -> AsyncIterator[bytes]:
    """The server-sent events of a streamed answer. Starlette stops iterating when the client disconnects;
    the job is then cancelled."""
    completion_id, created, usage = new_completion_id(), int(time.time()), parsed.include_usage
    finished = False
    try:
        yield _event(chunk_body(completion_id, model, created, {"role": "assistant", "content": ""}, None, usage))
        while True:
            kind, payload = await events.get()
            if kind == "delta":
                yield _event(chunk_body(completion_id, model, created, {"content": payload}, None, usage))
                continue
            if kind == "error":
                yield _event(error_body(str(payload), type="server_error"))
            else:
                yield _event(chunk_body(completion_id, model, created, {}, payload.finish_reason, usage))
                if usage:
                    yield _event(usage_chunk_body(completion_id, model, created, payload.prompt_tokens,
                                                  payload.completion_tokens))
            break
        yield b"data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:
            scope["mmrole.client_gone"] = True
            job.cancel()


def _cancel_unless_answered(job: Job, scope: Dict[str, Any]) -> None:
    """After a stream: a job still running lost its client (also when the stream never started)."""
    if not job.done.is_set():
        scope["mmrole.client_gone"] = True
        job.cancel()


def _event(payload: Dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"


# --- running it ----------------------------------------------------------------------------------

def build_server(backend, config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000,
                 max_batch_size: int = 8, max_queue: int = 256, shutdown_timeout: float = 30.0):
    """(uvicorn.Server, its bound socket, ServeApp) over an HFBackend; serve with `serve_until_stopped`."""
    import uvicorn

    from .http import ConnectionLimits, GuardedH11Protocol, ensure_file_descriptors

    ensure_file_descriptors(config.max_connections)
    engine = ChatEngine(backend, max_batch_size=max_batch_size, max_queue=max_queue)
    engine.check_settings()
    image_size = backend.model.config.visual["image_size"]
    images = RequestImages(image_size, max_pixels=config.max_image_pixels,
                           allowed_local_root=config.allowed_local_media_path, max_file_bytes=config.max_request_bytes)
    serve_app = ServeApp(config, engine, images, int(time.time()))
    limits = ConnectionLimits(config.max_connections, config.header_timeout)
    uvicorn_config = uvicorn.Config(
        create_app(serve_app), http=functools.partial(GuardedH11Protocol, limits=limits), ws="none",
        lifespan="off", loop="asyncio", log_config=None, access_log=False, proxy_headers=False,
        server_header=False, headers=[("server", "mmrole-serve")], backlog=LISTEN_BACKLOG,
        timeout_keep_alive=config.keep_alive_timeout, timeout_graceful_shutdown=shutdown_timeout,
        h11_max_incomplete_event_size=config.max_header_bytes)
    sock = _bind(host, port)
    return uvicorn.Server(uvicorn_config), sock, serve_app


def api_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def serve_until_stopped(server, sock: socket.socket, on_started: Callable[[], None] = lambda: None) -> None:
    """Run the uvicorn server on `sock` in this thread until server.should_exit (uvicorn sets it on SIGINT or
    SIGTERM in the main thread); on_started runs once it accepts connections."""
    async def run() -> None:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if server.started:
            on_started()
        await serving

    asyncio.run(run())


@dataclass
class RunningServer:
    """A server answering on a background thread (tests, notebooks, benchmarks)."""

    server: Any  # uvicorn.Server
    sock: socket.socket
    app: ServeApp
    thread: threading.Thread

    @property
    def address(self) -> Tuple[str, int]:
        return self.sock.getsockname()[:2]

    @property
    def base_url(self) -> str:
        return api_url(*self.address)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.app.engine.close()
        self.sock.close()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(backend, config: ServeConfig, **options: Any) -> RunningServer:
    """build_server, then serve on a daemon thread; returns once it accepts connections (port 0 = any free
    port)."""
    server, sock, serve_app = build_server(backend, config, **options)
    serve_app.engine.start()
    started = threading.Event()
    thread = threading.Thread(target=serve_until_stopped, args=(server, sock, started.set), name="mmrole-serve",
                              daemon=True)
    thread.start()
    while not started.wait(0.1):
        if not thread.is_alive():
            serve_app.engine.close()
            sock.close()
            raise RuntimeError("the server did not start (see the log)")
    return RunningServer(server, sock, serve_app, thread)


# --- command line --------------------------------------------------------------------------------

def read_api_key(env_name: Optional[str], key_file: Optional[str]) -> Optional[str]:
    """The API key from a file (its first non-empty line, stripped) or an environment variable; None when
    neither is set."""
    if key_file:
        lines = (line.strip() for line in Path(key_file).read_text(encoding="utf-8").splitlines())
        key = next((line for line in lines if line), None)
        if key is None:
            raise ValueError(f"{key_file} holds no key (no non-empty line)")
        return key
    return (os.environ.get(env_name) or None) if env_name else None


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m mmrole.serve", description=__doc__)
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
    net.add_argument("--api_key_file", default=None,
                     help="file whose first non-empty line is the API key (instead of the environment)")
    net.add_argument("--allowed_local_media_path", default=None,
                     help="folder whose image files clients may name by path (file://...); default: data URLs only")
    _add_limit_arguments(parser)
    parser.add_argument("--log_level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return parser.parse_args(argv)


def _add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServeConfig(model_name="")
    limits = parser.add_argument_group("requests")
    limits.add_argument("--max_request_mb", type=float, default=20.0, help="largest request body (default 20 MB)")
    limits.add_argument("--max_images", type=int, default=defaults.max_images, help="images per request (default 8)")
    limits.add_argument("--max_image_pixels", type=int, default=defaults.max_image_pixels,
                        help="pixels per image (default 4096^2)")
    limits.add_argument("--max_new_tokens_limit", type=int, default=defaults.max_tokens_limit,
                        help="largest max_tokens a request may ask for (default 2048)")
    add_hidden_alias(limits, "--max_tokens_limit", of="--max_new_tokens_limit")
    limits.add_argument("--max_context_tokens", type=int, default=defaults.max_context_tokens,
                        help="prompt + max_tokens at most this (default 8192, Qwen-VL-Chat's model_max_length)")
    engine = parser.add_argument_group("batching")
    engine.add_argument("--batch_size", type=int, default=8, help="rows decoding together at most (default 8)")
    add_hidden_alias(engine, "--max_batch_size", of="--batch_size")
    engine.add_argument("--max_queue", type=int, default=256, help="waiting requests before 503 (default 256)")
    connections = parser.add_argument_group("connections")
    connections.add_argument("--max_connections", type=int, default=defaults.max_connections,
                             help=f"open connections at most; more are answered 503 and closed "
                                  f"(default {defaults.max_connections})")
    connections.add_argument("--header_timeout", type=float, default=defaults.header_timeout,
                             help="seconds a connection has to send a complete request head, from its start or "
                                  f"from the end of its previous answer; trickling does not extend it "
                                  f"(default {defaults.header_timeout:g})")
    connections.add_argument("--body_timeout", type=float, default=defaults.body_timeout,
                             help=f"seconds a request body has to arrive after its head (default "
                                  f"{defaults.body_timeout:g})")
    connections.add_argument("--keep_alive_timeout", type=float, default=defaults.keep_alive_timeout,
                             help=f"seconds an idle kept-alive connection stays open (default "
                                  f"{defaults.keep_alive_timeout:g})")
    connections.add_argument("--max_header_bytes", type=int, default=defaults.max_header_bytes,
                             help=f"largest request head (default {defaults.max_header_bytes})")
    connections.add_argument("--shutdown_timeout", type=float, default=30.0,
                             help="on SIGTERM/SIGINT, seconds to let answers in progress finish (default 30)")


def _warn_if_exposed(host: str, has_key: bool) -> None:
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        loopback = False
    if not loopback and not has_key:
        logger.warning("binding %s without an API key: anyone who can reach this port can use the model", host)


def _config(args: argparse.Namespace, api_key: Optional[str]) -> ServeConfig:
    return ServeConfig(
        model_name=args.served_model_name or Path(args.model_path).resolve().name, api_key=api_key,
        max_request_bytes=int(args.max_request_mb * 2**20), max_images=args.max_images,
        max_image_pixels=args.max_image_pixels, max_tokens_limit=args.max_new_tokens_limit,
        max_context_tokens=args.max_context_tokens,
        allowed_local_media_path=Path(args.allowed_local_media_path) if args.allowed_local_media_path else None,
        max_connections=args.max_connections, header_timeout=args.header_timeout, body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout, max_header_bytes=args.max_header_bytes)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        api_key = read_api_key(args.api_key_env, args.api_key_file)
    except (OSError, ValueError) as e:
        print(f"error: cannot read the API key file: {e}", file=sys.stderr)
        return 2
    try:
        config = _config(args, api_key)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ..backends.hf import HFBackend

    try:
        backend = HFBackend(args.model_path, use_lora=args.use_lora, device=args.device, dtype=args.dtype)
        server, sock, serve_app = build_server(
            backend, config, host=args.host, port=args.port, max_batch_size=args.batch_size,
            max_queue=args.max_queue, shutdown_timeout=args.shutdown_timeout)
    except (OSError, ValueError) as e:  # no checkpoint, port in use, unusable limits or generation settings
        print(f"error: {e}", file=sys.stderr)
        return 2
    _warn_if_exposed(args.host, api_key is not None)
    for sig in (signal.SIGTERM, signal.SIGINT):  # until uvicorn takes them over (and after: it re-raises them)
        signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
    host, port = sock.getsockname()[:2]

    def announce() -> None:  # one line on stdout that scripts can wait for (tests, demos)
        print(f"serving {config.model_name} at {api_url(host, port)} "
              f"(api key {'required' if api_key else 'not required'})", flush=True)

    serve_app.engine.start()
    try:
        serve_until_stopped(server, sock, announce)
    finally:
        logger.info("shutting down")
        serve_app.engine.close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
