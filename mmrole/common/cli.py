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
from typing import Callable, Iterable, Optional, Sequence, Set, Tuple

from .store import ClaimedFolder, FolderBusy, PathLike, claim_output_folder

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


# --- one vocabulary for flags ----------------------------------------------------------------------
# Every script spells a concept the same way: --image_dir (the folder image paths are relative to), --check_images /
# --no_check_images, --output_dir (a folder) and --output_file (a file), --max_new_tokens (tokens to generate),
# --batch_size (rows decoding together). Spellings that scripts had before stay accepted as hidden aliases.

def add_hidden_alias(container, alias: str, of: str) -> None:
    """Accept `alias` as another spelling of the flag `of` (added to the same parser or group before): it sets the
    same value and is not shown by --help, so commands written for the old spelling keep working."""
    action = container._option_string_actions[of]
    if action.required:
        raise ValueError(f"{of} is required: argparse would refuse a command that gives only {alias}")
    hidden = dict(dest=action.dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS)
    if isinstance(action, argparse._StoreConstAction):  # store_true / store_false / store_const
        container.add_argument(alias, action="store_const", const=action.const, **hidden)
    else:
        container.add_argument(alias, type=action.type, nargs=action.nargs, choices=action.choices,
                               metavar=action.metavar, **hidden)


def add_check_images_arguments(container, *, default: bool, checked: str, unchecked: str) -> None:
    """--check_images / --no_check_images (one name, both ways; `default` says which holds when neither is
    given). checked / unchecked: what each does, for --help."""
    container.add_argument("--check_images", dest="check_images", action="store_true", default=default,
                           help=checked + (" (default)" if default else ""))
    container.add_argument("--no_check_images", dest="check_images", action="store_false",
                           help=unchecked + ("" if default else " (default)"))


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


def claim_output_folder_or_say_why(folder: PathLike, temp_folders: Iterable[Tuple[PathLike, bool]] = ()
                                   ) -> Optional[ClaimedFolder]:
    """store.claim_output_folder for a script: None after one line on stderr saying why the folder cannot be this
    run's (the script then exits with EXIT_UNUSABLE)."""
    try:
        return claim_output_folder(folder, temp_folders)
    except (FolderBusy, OSError) as e:
        print(f"error: output folder {folder}: {folder_error_text(e)}", file=sys.stderr)
        return None
