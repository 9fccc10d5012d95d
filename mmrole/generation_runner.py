"""What the data generators share: the client flags, running generation jobs through the client
with a journal (resume), and the record of which prompts and model made an output.

A job is one chat call whose validated value is kept; its call (prompt, base64 image) is built only
when the job is sent. `run_jobs` skips jobs already in the journal, sends the rest `concurrency` at a time, appends each finished value to the journal the
moment it arrives (a kill loses only the calls in flight), and reports failures per job without
ever writing them as data: a rerun retries them. Outputs are then written from the journal, in a
fixed order, so an interrupted-then-resumed run writes the same files as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from .client import ChatCall, ChatClient, Prices, RequestFailed
from .gen_prompts import PROMPT_VERSION
from .jobs import progress_bar
from .store import Journal, atomic_write_text

PathLike = Union[str, os.PathLike]
JOURNAL_DIR = ".generation"  # beside profiles/ and dialogues/ in the output folder


@dataclass
class GenJob:
    key: str  # unique within the journal, e.g. "detailed/Iron Man" or a dialogue id
    where: str  # for messages: the file (and item) this job produces
    call: ChatCall  # its messages may be a function the client calls when sending (images encoded then)


@dataclass
class RunSummary:
    planned: int = 0
    already_done: int = 0
    finished: int = 0
    failed: List[str] = field(default_factory=list)  # "where: message" per failed job
    stopped_early: bool = False

    def lines(self, what: str) -> List[str]:
        out = [f"{what}: {self.planned} planned, {self.already_done} already done, {self.finished} generated now, "
               f"{len(self.failed)} failed" + (" (stopped at --max_items)" if self.stopped_early else "")]
        out += [f"  failed: {f}" for f in self.failed]
        return out


def skipped_lines(skipped: Sequence[object]) -> List[str]:
    """The report's lines for items skipped before any call (none when nothing was skipped)."""
    return [f"skipped: {len(skipped)}"] + [f"  skipped: {s}" for s in skipped] if skipped else []


def generator_stamp(model: str) -> Dict[str, str]:
    """What every generated record carries: which prompts and which model made it."""
    return {"prompt_version": PROMPT_VERSION, "model": model}


def open_journal(output_dir: PathLike, name: str) -> Journal:
    return Journal(Path(output_dir) / JOURNAL_DIR / f"{name}.journal.jsonl", key_fields=("key",))


def run_jobs(client: ChatClient, jobs: Sequence[GenJob], journal: Journal, *, max_items: Optional[int] = None,
             progress: bool = True, desc: str = "generating", log: Callable[[str], None] = print) -> RunSummary:
    summary = RunSummary(planned=len(jobs))
    pending = [job for job in jobs if not journal.done((job.key,))]
    summary.already_done = len(jobs) - len(pending)
    if not pending or max_items == 0:
        summary.stopped_early = bool(pending)
        return summary
    by_key = {job.key: job for job in pending}
    outcomes = client.chat_many(job.call for job in pending)  # taken lazily, a few ahead
    with progress_bar(len(pending), desc, progress, unit="call") as bar:
        try:
            for outcome in outcomes:
                bar.update(1)
                job = by_key[outcome.key]
                if isinstance(outcome, RequestFailed):
                    summary.failed.append(f"{job.where}: {outcome}")
                    log(f"failed: {job.where}: {outcome}")
                    continue
                journal.append({"key": job.key, "value": outcome.value, **generator_stamp(outcome.model),
                                "prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens})
                summary.finished += 1
                if max_items is not None and summary.finished >= max_items:
                    summary.stopped_early = summary.finished < len(pending)
                    break
        finally:
            outcomes.close()  # cancels what has not started; calls in flight are dropped
    return summary


def write_json_file(path: PathLike, obj: Any) -> None:
    """The raw layout's JSON style: UTF-8, indent 4, no trailing newline."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=4))


# --- command line --------------------------------------------------------------------------------

def add_client_arguments(parser: argparse.ArgumentParser, *, default_max_tokens: int) -> None:
    group = parser.add_argument_group("model endpoint (any OpenAI-compatible API)")
    group.add_argument("--model", required=True, help="model name, e.g. gpt-4-turbo (a vision model for dialogues)")
    group.add_argument("--base_url", default=None, help="endpoint (default: $OPENAI_BASE_URL, else OpenAI)")
    group.add_argument("--api_key_env", default="OPENAI_API_KEY",
                       help="environment variable holding the API key (default OPENAI_API_KEY; never pass the key)")
    group.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    group.add_argument("--max_attempts", type=int, default=5,
                       help="attempts per request, retrying 429/5xx/timeouts/malformed replies (default 5)")
    group.add_argument("--timeout", type=float, default=120.0, help="seconds per attempt (default 120)")
    group.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    group.add_argument("--max_tokens", type=int, default=default_max_tokens,
                       help=f"completion token limit per request (default {default_max_tokens})")
    group.add_argument("--price_input", type=float, default=None, help="USD per million prompt tokens (cost report)")
    group.add_argument("--price_output", type=float, default=None, help="USD per million completion tokens")
    parser.add_argument("--max_items", type=int, default=None,
                        help="stop after this many newly generated items (a trial run; a rerun continues)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")


def client_from_args(args: argparse.Namespace) -> ChatClient:
    prices = None
    if args.price_input is not None or args.price_output is not None:
        prices = Prices(args.price_input or 0.0, args.price_output or 0.0)
    return ChatClient(args.model, base_url=args.base_url, api_key_env=args.api_key_env, concurrency=args.concurrency,
                      max_attempts=args.max_attempts, timeout=args.timeout, prices=prices,
                      default_params={"temperature": args.temperature, "max_tokens": args.max_tokens})


def run_generator_cli(args: argparse.Namespace, generate: Callable[[ChatClient], Any]) -> int:
    """Make the client, run generate(client) -> report (with .lines() and .failed), print the
    report and the token/cost summary. Exit code 1 when anything failed or could not start."""
    from .raw_data import DialogueError, RawDataError

    try:
        client = client_from_args(args)
        report = generate(client)
    except (ValueError, OSError, RawDataError, DialogueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    print(client.usage.summary())
    return 1 if report.failed else 0
