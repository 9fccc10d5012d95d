"""`python app.py`: a web page to talk with a character about an image, and to browse an evaluation.

    python app.py --profiles MMRole-Data/profiles --model_path model_weights/MMRole-Agent [--eval_dir DIR]
    python app.py --profiles MMRole-Data/profiles --base_url http://127.0.0.1:8000/v1 --model MMRole-Agent
    python app.py --eval_dir ../shared/mmrole_reference

Chat: pick a character of --profiles (MMRole-Data's layout: ROOT, ROOT/profiles or one split folder) or write a
profile in the page, pick an image of the data (ROOT/images) or upload one, and talk in human-role or inter-role mode;
the reply streams in. Each turn is the prompt inference builds (role-play system prompt, MMRole prompt format, the
conversation history inside the prompt), shown on demand. Replies come from a local checkpoint (--model_path: the
turns of all users decode together in serve.py's continuous-batching engine) or from an OpenAI-compatible endpoint
(--base_url and --model; the key from the environment variable --api_key_env, never shown or logged).

Evaluation browser (--eval_dir, the published layout: {in,out}-test_{answers,reviews,results}/<model>/...): Table 5
and the radar chart; per sample the image (from --image_dir), the dialogue context, the answers of one or two models
beside the ground truth and the eight reviews with their scores; filters, ordering by score gap, and a link that
reopens the view.

The page binds 127.0.0.1 (this machine only) unless --host says otherwise. Nothing is written into the folders it
reads: uploads and drawn charts live in temporary folders. Exit status: 0 when stopped (Ctrl-C or SIGTERM); 2 for a
usage error (bad flags, a path that does not exist, no profiles in --profiles, an API key on the command line) and
when it cannot start (a model that cannot be loaded, a port in use).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Optional

from ..backends.endpoint import add_endpoint_arguments
from ..common.cli import EXIT_OK, EXIT_USAGE, ArgumentParser, float_above, int_at_least
from .profiles import ProfileError, load_character_book
from .uploads import DEFAULT_MAX_MB, DEFAULT_MAX_PIXELS

logger = logging.getLogger("mmrole.app")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python app.py", description=__doc__)
    pages = parser.add_argument_group("what the pages show")
    pages.add_argument("--profiles", default=None, help="profiles folder in the MMRole-Data layout (the chat page)")
    pages.add_argument("--eval_dir", default=None, help="evaluation folder in the published layout (the browser)")
    pages.add_argument("--image_dir", default=None,
                       help="folder the evaluation samples' image paths are relative to (default: none, no images)")
    local = parser.add_argument_group("replies from a local checkpoint")
    local.add_argument("--model_path", default=None, help="Qwen-VL-Chat-format folder (or a LoRA adapter folder)")
    local.add_argument("--use_lora", action="store_true", help="--model_path holds a LoRA adapter (also detected)")
    local.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    local.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default float32 on cpu)")
    local.add_argument("--batch_size", type=int_at_least(1), default=8,
                       help="turns of different users decoding together at most (default 8)")
    endpoint = parser.add_argument_group("replies from an OpenAI-compatible endpoint")
    add_endpoint_arguments(endpoint)
    generation = parser.add_argument_group("generation (the page's defaults; each user may change them)")
    generation.add_argument("--no_random", action="store_true",
                            help="greedy decoding by default, as inference.py --no_random (default: sampling)")
    generation.add_argument("--max_new_tokens", type=int_at_least(1), default=512,
                            help="tokens per reply (default 512, Qwen-VL-Chat's generation default)")
    net = parser.add_argument_group("the page")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    net.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free port)")
    net.add_argument("--max_image_mb", type=float_above(0), default=DEFAULT_MAX_MB,
                     help=f"largest upload (default {DEFAULT_MAX_MB:g} MB)")
    net.add_argument("--max_image_pixels", type=int_at_least(1), default=DEFAULT_MAX_PIXELS,
                     help="pixels per uploaded image at most (default 4096^2)")
    net.add_argument("--sessions", type=int_at_least(1), default=16,
                     help="turns in progress at once over all users (default 16)")
    return parser.parse_args(argv)


def usage_problem(args: argparse.Namespace) -> Optional[str]:
    """Why these flags cannot run, or None."""
    if not args.profiles and not args.eval_dir:
        return "nothing to show: give --profiles (the chat page) and/or --eval_dir (the evaluation browser)"
    if args.model_path and args.base_url:
        return "--model_path and --base_url both name where replies come from: give one"
    if args.base_url and not args.model:
        return "--base_url needs --model: the model name the endpoint serves (serve.py prints it when it starts)"
    if args.model and not args.base_url and not args.model_path:
        return "--model names a model of an endpoint: give --base_url too (or --model_path for a local checkpoint)"
    for flag in ("profiles", "eval_dir", "image_dir", "model_path"):
        value = getattr(args, flag)
        if value and not Path(value).exists():
            return f"--{flag} {value}: no such file or folder"
    return None


def make_replies(args: argparse.Namespace):
    """The reply source the flags name (None: no model); ValueError/OSError when it cannot be made."""
    from .replies import EndpointReplies, LocalReplies

    if args.model_path:
        from ..backends.hf import HFBackend

        backend = HFBackend(args.model_path, use_lora=args.use_lora, device=args.device, dtype=args.dtype)
        return LocalReplies(backend, batch_size=args.batch_size, max_queue=max(64, 4 * args.sessions))
    if args.base_url:
        from ..backends.endpoint import client_from_args

        return EndpointReplies(client_from_args(args))
    return None


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def launch(args: argparse.Namespace, replies):
    """Build the page and start serving it (in threads); returns the Gradio app."""
    from .chat_page import ChatPage
    from .evaluation import load_eval_folder
    from .web import CSS, build_app, theme

    book = load_character_book(args.profiles) if args.profiles else None
    folder = load_eval_folder(args.eval_dir) if args.eval_dir else None
    for problem in (book.problems if book else []) + (folder.problems if folder else []):
        logger.warning("%s", problem)
    page = ChatPage(book, replies, max_image_bytes=int(args.max_image_mb * 2**20),
                    max_image_pixels=args.max_image_pixels, greedy=args.no_random, max_new_tokens=args.max_new_tokens)
    app = build_app(page, folder, Path(args.image_dir) if args.image_dir else None, concurrency=args.sessions)
    port = args.port or free_port(args.host)
    app.launch(server_name=args.host, server_port=port, prevent_thread_lock=True, quiet=True, show_error=False,
               max_file_size=int(2 * args.max_image_mb * 2**20), ssr_mode=False, footer_links=[], mcp_server=False,
               enable_monitoring=False, theme=theme(), css=CSS, max_threads=max(40, 2 * args.sessions))
    return app


def main(argv=None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports leave the machine
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problem = usage_problem(args)
    if problem is None and args.profiles:
        try:
            load_character_book(args.profiles)
        except ProfileError as e:
            problem = str(e)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        replies = make_replies(args)
        app = launch(args, replies)
    except (OSError, ValueError) as e:  # no checkpoint, an unusable generation config, a port in use, no API key
        print(f"error: cannot start: {e}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"MMRole app at {app.local_url} (this machine only)" if args.host == "127.0.0.1"
          else f"MMRole app at {app.local_url} (bound to {args.host})", flush=True)
    while not stop.wait(1.0):
        pass
    app.close()
    if replies is not None:
        replies.close()
    return EXIT_OK
