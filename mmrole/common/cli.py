"""Command-line pieces shared by every script: the exit-status contract, the argument parser (no prefix
matching, no API keys on the command line), the backend and generation flags of inference.py,
eval/RM_review.py and eval/GPT_review.py, and how they become a Backend and GenerationParams.

Exit status of every script (README.md, "Exit status"):
  0  every item done (deliberate skips, such as empty answers the original does not review, are listed)
  1  a file or folder could not be used: named on stderr; the other files were still processed
  2  usage error, nothing done: bad or inapplicable flags, an API key on the command line, no input
     (missing or empty folder), no API key, or the endpoint refused the key or the model
  3  finished, but items were not done (failed requests, reviews without a score, bad input records,
     damaged images, incomplete reviews in RM_result/report): each listed with file and sample id;
     a rerun redoes what failed
When several apply, the worst wins: 2, then 1, then 3 (`worst_status`; the shell wrappers do the same).
"""

from __future__ import annotations

import argparse
import errno
import re
import sys
from typing import Callable, Optional, Sequence, Set

from ..backends.base import DEFAULT_SEED, GenerationParams

EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
_SEVERITY = {EXIT_OK: 0, EXIT_INCOMPLETE: 1, EXIT_UNUSABLE: 2, EXIT_USAGE: 3}
# Errors of writing an output: reported in one line (exit status 1), never a traceback.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO})


def worst_status(*codes: int) -> int:
    """The status that says most of several (2 > 1 > 3 > 0; anything else, e.g. a crash, is worse still)."""
    return max((EXIT_OK, *codes), key=lambda code: _SEVERITY.get(code, len(_SEVERITY)))


# --- API keys never on the command line (they would end up in shell history, `ps` and logs) ------

# What API keys look like: OpenAI/Anthropic-style `sk-...`, Hugging Face `hf_...`, a bearer header.
API_KEY_PATTERN = re.compile(r"(?<![A-Za-z0-9])((?:sk|pk|rk)-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]{4,}"
                             r"|(?<![A-Za-z0-9])(hf_[A-Za-z0-9]{4})[A-Za-z0-9]{8,}|(Bearer )\S+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A command-line word that is a key (not a path or a name that merely contains "sk-").
KEY_WORD = re.compile(r"(?:(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{12,})")
KEY_FLAG_WORDS = ("key", "token", "secret", "password")


def redact_keys(text: str) -> str:
    """`text` with everything shaped like an API key cut to its first characters."""
    return API_KEY_PATTERN.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)


def looks_like_api_key(text: str) -> bool:
    return bool(API_KEY_PATTERN.search(text))


def _looks_like_env_name(text: str) -> bool:
    """An environment variable's name, not a key: an identifier without the mix of lower case and digits
    of a long random key (names are conventionally upper case: OPENAI_API_KEY)."""
    if not ENV_NAME.fullmatch(text) or looks_like_api_key(text):
        return False
    return not (len(text) >= 20 and any(c.isdigit() for c in text) and any(c.islower() for c in text))


class ArgumentParser(argparse.ArgumentParser):
    """argparse for every script of the project: options must be spelled out (allow_abbrev=False: with
    prefix matching `--api_key sk-...` silently became `--api_key_env sk-...`), an API key given on the
    command line is refused with a message that never repeats it, and error messages never echo a key."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        problem = self._key_on_command_line(args)
        if problem:
            self.error(problem)
        return super().parse_known_args(args, namespace)

    def _key_on_command_line(self, argv: Sequence[str]) -> Optional[str]:
        known = self._option_string_actions
        for position, token in enumerate(argv):
            if token == "--":
                break
            name = token.split("=", 1)[0]
            if token.startswith("-") and name not in known and any(w in name.lower() for w in KEY_FLAG_WORDS):
                return (f"{name}: API keys are not taken on the command line (they would stay in the shell history "
                        "and the process list); put the key in an environment variable and name the variable with "
                        "--api_key_env (default OPENAI_API_KEY)")
            action = known.get(name)
            if action is not None and action.dest.endswith("_env"):
                value = token.split("=", 1)[1] if "=" in token else (argv[position + 1] if position + 1 < len(argv) else "")
                if value and not _looks_like_env_name(value):
                    return (f"{name} takes the NAME of an environment variable (e.g. OPENAI_API_KEY), and the value "
                            "given is not one (it looks like a key, so it is not shown): export the key and give "
                            "the variable's name")
            value = token.split("=", 1)[1] if token.startswith("-") and "=" in token else token
            if KEY_WORD.fullmatch(value):
                return (f"argument {position + 1} looks like an API key (not shown): keys are not taken on the command "
                        "line; put it in an environment variable and name it with --api_key_env")
        return None

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {redact_keys(message)}\n")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (else a usage error naming the flag)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"int >= {minimum}"
    return parse


def float_above(minimum: float) -> Callable[[str], float]:
    """An argparse type: a number greater than `minimum`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > minimum:
            raise argparse.ArgumentTypeError(f"must be greater than {minimum:g}, got {text}")
        return value
    parse.__name__ = f"number > {minimum:g}"
    return parse


def given_flags(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> Set[str]:
    """The dests of the options written out on the command line (not those left at their defaults)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    actions = parser._option_string_actions
    given = set()
    for token in argv:
        if token == "--":
            break
        action = actions.get(token.split("=", 1)[0]) if token.startswith("-") else None
        if action is not None:
            given.add(action.dest)
    return given


def write_error_message(error: OSError) -> str:
    """One line for an output that could not be written (a full disk, a read-only folder...)."""
    where = f"cannot write {error.filename}" if error.filename else "cannot write an output"
    return (f"{where}: {error.strerror or error}; nothing was left half-written (outputs are replaced atomically, "
            "finished items stay in the journals): fix it and rerun")


def folder_error_text(error: Exception) -> str:
    """Why an output folder cannot be claimed (store.claim_output_folder), without errno noise."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


# --- inference.py, eval/RM_review.py, eval/GPT_review.py ------------------------------------------

BACKENDS = ("hf", "openai")
BACKEND_ONLY_FLAGS = {
    "hf": ("model_path", "use_lora", "device", "dtype", "batch_size"),
    "openai": ("model", "base_url", "api_key_env", "concurrency", "max_attempts", "timeout"),
}


def add_backend_arguments(parser: argparse.ArgumentParser, *, backend: str, model_path: str, model: str = None) -> None:
    """--backend and the options of each backend (the original flags --model_path/--use_lora first)."""
    group = parser.add_argument_group("backend")
    group.add_argument("--backend", choices=BACKENDS, default=backend,
                       help=f"hf: local Qwen-VL checkpoint; openai: any OpenAI-compatible endpoint (default {backend})")
    group.add_argument("--model_path", default=model_path, help="hf: checkpoint folder")
    group.add_argument("--use_lora", action="store_true", help="hf: --model_path holds a LoRA adapter")
    group.add_argument("--device", default=None, help="hf: torch device (default: cuda if available, else cpu)")
    group.add_argument("--dtype", default=None, help="hf: float32, bfloat16 or float16 (default: float32 on cpu)")
    group.add_argument("--batch_size", type=int_at_least(1), default=8, help="hf: requests per forward pass (default 8)")
    group.add_argument("--model", default=model, help="openai: model name the endpoint serves")
    group.add_argument("--base_url", default=None,
                       help="openai: endpoint, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL or OpenAI)")
    group.add_argument("--api_key_env", default="OPENAI_API_KEY",
                       help="openai: name of the environment variable holding the API key (never pass the key)")
    group.add_argument("--concurrency", type=int_at_least(1), default=4, help="openai: requests in flight (default 4)")
    group.add_argument("--max_attempts", type=int_at_least(1), default=5,
                       help="openai: attempts per request (backoff between them) before it is reported failed")
    group.add_argument("--timeout", type=float_above(0), default=120.0, help="openai: seconds per attempt")


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
    other = "openai" if args.backend == "hf" else "hf"
    problems = [f"--{dest} applies to --backend {other} only" for dest in BACKEND_ONLY_FLAGS[other] if dest in given]
    if args.no_random and not sampling_used:
        # hf greedy decoding uses no seed; an openai endpoint still gets the seed it is given
        unused = ("temperature", "top_p") + (("seed",) if args.backend == "hf" else ())
        problems += [f"--{dest} has no effect with --no_random (greedy decoding)" for dest in unused if dest in given]
    if problems:
        parser.error("; ".join(problems))


def seed_of(args: argparse.Namespace) -> int:
    return DEFAULT_SEED if args.seed is None else args.seed


def generation_params(args: argparse.Namespace) -> GenerationParams:
    return GenerationParams(greedy=args.no_random, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_p=args.top_p, seed=seed_of(args))


def backend_from_args(args: argparse.Namespace):
    """The Backend the flags ask for (imports torch only for hf)."""
    from ..backends import make_backend

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
    parser.add_argument("--output_dir", default=output_dir,
                        help="outputs go here, named like the inputs (one run at a time: the folder is locked)")
    parser.add_argument("--redo_stale", action="store_true",
                        help="redo results in --output_dir's journals made with another model or other generation "
                             "settings (default: refuse such a file and say so)")


def review_main(argv, *, description: str, backend: str, model_path: str, model: str = None) -> int:
    """RM_review.py and GPT_review.py: the same review, different default judges."""
    from ..review import EMPTY_ANSWER_POLICIES, ReviewConfig, review_files

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
    from ..jobs import print_summaries
    from ..results import input_files
    from ..schema import SchemaError
    from .store import FolderBusy, claim_output_folder

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
