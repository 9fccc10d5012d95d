"""Command-line pieces shared by inference.py, eval/RM_review.py and eval/GPT_review.py: the
backend flags, the generation flags, and how they become a Backend and GenerationParams."""

from __future__ import annotations

import argparse

from .backends.base import DEFAULT_SEED, GenerationParams

BACKENDS = ("hf", "openai")


def add_backend_arguments(parser: argparse.ArgumentParser, *, backend: str, model_path: str, model: str = None) -> None:
    """--backend and the options of each backend (the original flags --model_path/--use_lora first)."""
    group = parser.add_argument_group("backend")
    group.add_argument("--backend", choices=BACKENDS, default=backend,
                       help=f"hf: local Qwen-VL checkpoint; openai: any OpenAI-compatible endpoint (default {backend})")
    group.add_argument("--model_path", default=model_path, help="hf: checkpoint folder")
    group.add_argument("--use_lora", action="store_true", help="hf: --model_path holds a LoRA adapter")
    group.add_argument("--device", default=None, help="hf: torch device (default: cuda if available, else cpu)")
    group.add_argument("--dtype", default=None, help="hf: float32, bfloat16 or float16 (default: float32 on cpu)")
    group.add_argument("--batch_size", type=int, default=8, help="hf: requests per forward pass (default 8)")
    group.add_argument("--model", default=model, help="openai: model name the endpoint serves")
    group.add_argument("--base_url", default=None,
                       help="openai: endpoint, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL or OpenAI)")
    group.add_argument("--api_key_env", default="OPENAI_API_KEY",
                       help="openai: name of the environment variable holding the API key (never pass the key)")
    group.add_argument("--concurrency", type=int, default=4, help="openai: requests in flight (default 4)")
    group.add_argument("--max_attempts", type=int, default=5,
                       help="openai: attempts per request (backoff between them) before it is reported failed")
    group.add_argument("--timeout", type=float, default=120.0, help="openai: seconds per attempt")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation")
    group.add_argument("--no_random", action="store_true", help="greedy decoding (as the original flag)")
    group.add_argument("--max_new_tokens", type=int, default=None,
                       help="default: the checkpoint's generation_config.json (hf) or the endpoint's default")
    group.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: checkpoint/endpoint)")
    group.add_argument("--top_p", type=float, default=None, help="nucleus sampling (default: checkpoint/endpoint)")
    group.add_argument("--seed", type=int, default=None,
                       help=f"sampling seed (default {DEFAULT_SEED}, as the original seeded torch); sent to an openai "
                            "endpoint only when given, since some endpoints reject the field")
    group.add_argument("--no_progress", action="store_true", help="no progress bars")


def seed_of(args: argparse.Namespace) -> int:
    return DEFAULT_SEED if args.seed is None else args.seed


def generation_params(args: argparse.Namespace) -> GenerationParams:
    return GenerationParams(greedy=args.no_random, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_p=args.top_p, seed=seed_of(args))


def backend_from_args(args: argparse.Namespace):
    """The Backend the flags ask for (imports torch only for hf)."""
    from .backends import make_backend

    if args.backend == "hf":
        return make_backend("hf", model_path=args.model_path, use_lora=args.use_lora, device=args.device,
                            dtype=args.dtype, batch_size=args.batch_size)
    return make_backend("openai", model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
                        concurrency=args.concurrency, max_attempts=args.max_attempts, timeout=args.timeout,
                        send_seed=args.seed is not None)


def add_io_arguments(parser: argparse.ArgumentParser, *, input_dir: str, output_dir: str) -> None:
    """The original scripts' file flags."""
    parser.add_argument("--image_dir", default="images", help="root of the images named in the samples")
    parser.add_argument("--input_dir", default=input_dir, help="folder of input files (*.json)")
    parser.add_argument("--input_file", default=None, help="only this file of --input_dir")
    parser.add_argument("--output_dir", default=output_dir, help="outputs go here, named like the inputs")
    parser.add_argument("--redo_stale", action="store_true",
                        help="redo results in --output_dir's journals made with another model or other generation "
                             "settings (default: refuse such a file and say so)")


def review_main(argv, *, description: str, backend: str, model_path: str, model: str = None) -> int:
    """RM_review.py and GPT_review.py: the same review, different default judges."""
    from .review import EMPTY_ANSWER_POLICIES, ReviewConfig, review_files

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_io_arguments(parser, input_dir="eval/mini_answers/mmrole-agent", output_dir="eval/mini_reviews/mmrole-agent")
    add_backend_arguments(parser, backend=backend, model_path=model_path, model=model)
    add_generation_arguments(parser)
    group = parser.add_argument_group("review")
    group.add_argument("--parse_retries", type=int, default=0,
                       help="ask a review without a score pair again (sampling) up to N times; 0 = the original")
    group.add_argument("--empty_answer", choices=EMPTY_ANSWER_POLICIES, default="skip",
                       help="skip: as the original (not reviewed, listed); judge: review it like any answer")
    group.add_argument("--swap", action="store_true",
                       help="also ask with the answers swapped (rm_review_swapped) and report the position bias")
    args = parser.parse_args(argv)
    config = ReviewConfig(image_dir=args.image_dir, params=generation_params(args), parse_retries=args.parse_retries,
                          retry_seed=seed_of(args), empty_answer=args.empty_answer, swap=args.swap,
                          progress=not args.no_progress, redo_stale=args.redo_stale)
    return run_with_backend(args, lambda inputs, backend: review_files(inputs, args.output_dir, backend, config))


def run_with_backend(args: argparse.Namespace, work) -> int:
    """The input files of --input_dir/--input_file and the Backend of the flags, handed to
    work(inputs, backend) -> [FileSummary]; then the summary (and API usage) on stderr.
    Exit status 1 when a file could not be processed at all (the others were), else 0."""
    import sys

    from .jobs import print_summaries
    from .results import input_files
    from .schema import SchemaError

    try:
        inputs = input_files(args.input_dir, args.input_file)
        backend = backend_from_args(args)
    except (SchemaError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summaries = work(inputs, backend)
    finally:
        usage = getattr(backend, "usage_summary", None)
        backend.close()
    print_summaries(summaries)
    if usage is not None:
        print(f"API usage: {usage()}", file=sys.stderr)
    return 1 if any(summary.unusable for summary in summaries) else 0
