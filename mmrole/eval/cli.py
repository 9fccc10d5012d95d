"""The command line of evaluation: the flags of inference.py, eval/RM_review.py and eval/GPT_review.py (the
original MMRole flags --model_path --image_dir --input_dir --input_file --output_dir --no_random --use_lora, plus the
backend and generation flags), how they become a Backend and GenerationParams, and the run around the work: input
files, the claimed output folder, the summary and the exit status of the project's contract (mmrole.common.cli).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..backends.base import DEFAULT_SEED, GenerationParams
from ..backends.endpoint import ENDPOINT_FLAGS, add_endpoint_arguments, client_from_args
from ..common.cli import (EXIT_UNUSABLE, EXIT_USAGE, WRITE_ERRNOS, ArgumentParser, folder_error_text, given_flags,
                          int_at_least, redact_keys, worst_status, write_error_message)


BACKENDS = ("hf", "openai", "transformers")
LOCAL_MODEL_FLAGS = ("model_path", "device", "dtype", "batch_size")
BACKEND_FLAGS = {  # the options each backend takes; any other backend's option is refused
    "hf": LOCAL_MODEL_FLAGS + ("use_lora",),
    "openai": ENDPOINT_FLAGS,
    "transformers": LOCAL_MODEL_FLAGS,
}


def add_backend_arguments(parser: argparse.ArgumentParser, *, backend: str, model_path: str, model: str = None) -> None:
    """--backend and the options of each backend (the original flags --model_path/--use_lora first); the openai
    backend's are the endpoint flags every script that talks to an endpoint has (backends.client)."""
    group = parser.add_argument_group("backend")
    group.add_argument("--backend", choices=BACKENDS, default=backend,
                       help="hf: local Qwen-VL checkpoint; openai: any OpenAI-compatible endpoint; transformers: any "
                            f"local image-text-to-text checkpoint (Qwen2.5-VL, LLaVA-OneVision, ...) (default {backend})")
    group = parser.add_argument_group("--backend hf or transformers: a local checkpoint (hf: Qwen-VL-Chat format; "
                                      "transformers: any AutoModelForImageTextToText folder with a chat template)")
    group.add_argument("--model_path", default=model_path, help="checkpoint folder")
    group.add_argument("--use_lora", action="store_true", help="--model_path holds a LoRA adapter (hf only)")
    group.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    group.add_argument("--dtype", default=None,
                       help="float32, bfloat16 or float16 (default: float32 on cpu, bfloat16 on a gpu that has it)")
    group.add_argument("--batch_size", type=int_at_least(1), default=8, help="requests per forward pass (default 8)")
    add_endpoint_arguments(parser.add_argument_group("--backend openai: any OpenAI-compatible endpoint"), model=model)


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation")
    group.add_argument("--no_random", action="store_true", help="greedy decoding (as the original flag)")
    group.add_argument("--max_new_tokens", type=int_at_least(1), default=None,
                       help="default: the checkpoint's generation_config.json (hf) or the endpoint's default")
    group.add_argument("--temperature", type=float, default=None,
                       help="sampling temperature (default: checkpoint/endpoint; not with --no_random)")
    group.add_argument("--top_p", type=float, default=None,
                       help="nucleus sampling (default: checkpoint/endpoint; not with --no_random)")
    group.add_argument("--seed", type=int, default=None,
                       help=f"sampling seed (default {DEFAULT_SEED}, as the original seeded torch); sent to an openai "
                            "endpoint only when given, since some endpoints reject the field")
    group.add_argument("--no_progress", action="store_true", help="no progress bars")


def refuse_inapplicable_flags(parser: argparse.ArgumentParser, args: argparse.Namespace,
                              argv: Optional[Sequence[str]], *, sampling_used: bool = False) -> None:
    """A usage error (exit 2) for flags written out that would be ignored: the other backend's options, and
    sampling settings with --no_random unless something still samples (sampling_used: review retries)."""
    given = given_flags(parser, argv)
    problems = []
    for dest in dict.fromkeys(flag for flags in BACKEND_FLAGS.values() for flag in flags):
        if dest in given and dest not in BACKEND_FLAGS[args.backend]:
            takers = " or ".join(name for name in BACKENDS if dest in BACKEND_FLAGS[name])
            problems.append(f"--{dest} applies to --backend {takers} only")
    if args.no_random and not sampling_used:
        # local greedy decoding uses no seed; an openai endpoint still gets the seed it is given
        unused = ("temperature", "top_p") + (("seed",) if args.backend != "openai" else ())
        problems += [f"--{dest} has no effect with --no_random (greedy decoding)" for dest in unused if dest in given]
    if problems:
        parser.error("; ".join(problems))


def seed_of(args: argparse.Namespace) -> int:
    return DEFAULT_SEED if args.seed is None else args.seed


def generation_params(args: argparse.Namespace) -> GenerationParams:
    return GenerationParams(greedy=args.no_random, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_p=args.top_p, seed=seed_of(args))


def backend_from_args(args: argparse.Namespace):
    """The Backend the flags ask for (imports torch only for the local ones)."""
    from ..backends import make_backend

    if args.backend == "hf":
        return make_backend("hf", model_path=args.model_path, use_lora=args.use_lora, device=args.device,
                            dtype=args.dtype, batch_size=args.batch_size)
    if args.backend == "transformers":
        return make_backend("transformers", model_path=args.model_path, device=args.device, dtype=args.dtype,
                            batch_size=args.batch_size)
    return make_backend("openai", client=client_from_args(args), send_seed=args.seed is not None)


def add_io_arguments(parser: argparse.ArgumentParser, *, input_dir: str, output_dir: str) -> None:
    """The original scripts' file flags."""
    parser.add_argument("--image_dir", default="images", help="root of the images named in the samples")
    parser.add_argument("--input_dir", default=input_dir, help="folder of input files (*.json)")
    parser.add_argument("--input_file", default=None, help="only this file of --input_dir")
    parser.add_argument("--output_dir", default=output_dir,
                        help="outputs go here, named like the inputs (one run at a time: the folder is locked)")
    parser.add_argument("--redo_stale", action="store_true",
                        help="redo results in --output_dir's journals made with another model or other generation "
                             "settings (default: refuse such a file and say so)")


def review_main(argv, *, description: str, backend: str, model_path: str, model: str = None) -> int:
    """RM_review.py and GPT_review.py: the same review, different default judges."""
    from .review import EMPTY_ANSWER_POLICIES, ReviewConfig, review_files

    parser = ArgumentParser(description=description)
    add_io_arguments(parser, input_dir="eval/mini_answers/mmrole-agent", output_dir="eval/mini_reviews/mmrole-agent")
    add_backend_arguments(parser, backend=backend, model_path=model_path, model=model)
    add_generation_arguments(parser)
    group = parser.add_argument_group("review")
    group.add_argument("--parse_retries", type=int_at_least(0), default=0,
                       help="ask a review without a score pair again (sampling) up to N times; 0 = the original")
    group.add_argument("--empty_answer", choices=EMPTY_ANSWER_POLICIES, default="skip",
                       help="skip: as the original (not reviewed, listed); judge: review it like any answer")
    group.add_argument("--swap", action="store_true",
                       help="also ask with the answers swapped (rm_review_swapped) and report the position bias")
    args = parser.parse_args(argv)
    refuse_inapplicable_flags(parser, args, argv, sampling_used=args.parse_retries > 0)
    config = ReviewConfig(image_dir=args.image_dir, params=generation_params(args), parse_retries=args.parse_retries,
                          retry_seed=seed_of(args), empty_answer=args.empty_answer, swap=args.swap,
                          progress=not args.no_progress, redo_stale=args.redo_stale)
    return run_with_backend(args, lambda inputs, backend: review_files(inputs, args.output_dir, backend, config))


def run_with_backend(args: argparse.Namespace, work) -> int:
    """The input files of --input_dir/--input_file, --output_dir claimed for this run (checked writable and
    locked before the model is loaded or any request is sent) and the Backend of the flags, handed to
    work(inputs, backend) -> [FileSummary]; then the summary (and API usage) on stderr. Returns the exit
    status of the contract above."""
    from ..backends.base import FatalBackendError
    from .run import print_summaries
    from .files import input_files
    from .files import SchemaError
    from ..common.store import FolderBusy, claim_output_folder

    try:
        inputs = input_files(args.input_dir, args.input_file)
    except SchemaError as e:
        return _fail(e, EXIT_USAGE)
    try:
        folder = claim_output_folder(args.output_dir)
    except (FolderBusy, OSError) as e:
        return _fail(f"output folder {args.output_dir}: {folder_error_text(e)}", EXIT_UNUSABLE)
    for note in folder.notes:
        print(note, file=sys.stderr)
    try:
        try:
            backend = backend_from_args(args)
        except (ValueError, OSError) as e:
            return _fail(e, EXIT_USAGE)
        try:
            summaries = work(inputs, backend)
        except FatalBackendError as e:
            return _fail(e, EXIT_USAGE)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            return _fail(write_error_message(e), EXIT_UNUSABLE)
        finally:
            usage = getattr(backend, "usage_summary", None)
            backend.close()
    finally:
        folder.release()
    print_summaries(summaries)
    if usage is not None:
        print(f"API usage: {usage()}", file=sys.stderr)
    return worst_status(*(summary.status for summary in summaries))


def _fail(message, status: int) -> int:
    print(f"error: {redact_keys(str(message))}", file=sys.stderr)
    return status
