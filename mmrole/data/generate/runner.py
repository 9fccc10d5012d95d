"""What the data generators share: the client flags, running planned calls through the client
with a journal (resume), and the record of which prompts and model made an output.

A planned call is one chat call whose validated value is kept; its messages (prompt, base64 image) are built
only when it is sent. `run_calls` skips calls already in the journal, sends the rest `concurrency` at a
time, appends each finished value to the journal the moment it arrives (a kill loses only the calls in
flight), and reports failures per call without ever writing them as data. A failure of the endpoint
(API errors after the retries) is retried by the next run. A call whose replies were all rejected (not
the requested format, wrong language, a cut or too short text...) is recorded in the journal as
rejected and not asked again (each ask is paid) unless the run is given retry_rejected
(--retry_rejected); it is listed as not done either way. Outputs are then written from the journal,
in a fixed order, so an interrupted-then-resumed run writes the same files as an uninterrupted one.

Exit status of the generators (mmrole.common.cli): 0 every item made; 1 a file the run depends on or the
output folder could not be used (or an existing output file could not be read); 2 usage error (no
API key, the endpoint refused the key or the model, bad flags); 3 items not made (failed, rejected or
skipped, each listed).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ...backends.client import ChatCall, ChatClient, EndpointRejected, Prices, RequestFailed
from ...backends.endpoint import add_endpoint_arguments, client_from_args
from ...common.cli import (EXIT_INCOMPLETE, EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE, WRITE_ERRNOS, add_hidden_alias,
                           folder_error_text, int_at_least, redact_keys, worst_status, write_error_message)
from ...common.progress import progress_bar
from ...common.store import CorruptJournal, FolderBusy, Journal, PathLike, claim_output_folder
from .prompts import PROMPT_VERSION

JOURNAL_DIR = ".generation"  # beside profiles/ and dialogues/ in the output folder
REJECTED = "rejected"  # the status of a journal entry whose replies were all turned down


@dataclass
class PlannedCall:
    key: str  # unique within the journal, e.g. "detailed/Iron Man" or a dialogue id
    where: str  # for messages: the file (and item) this call produces
    call: ChatCall  # its messages may be a function the client calls when sending (images encoded then)


@dataclass
class RunSummary:
    planned: int = 0
    already_done: int = 0
    finished: int = 0
    failed: List[str] = field(default_factory=list)  # "where: message" per failed (or rejected) call
    rejected_before: List[str] = field(default_factory=list)  # rejected in an earlier run, not asked again
    stopped_early: bool = False

    @property
    def not_started(self) -> int:
        """Jobs left for a later run (--max_items stopped this one)."""
        return max(0, self.planned - self.already_done - self.finished - len(self.failed) - len(self.rejected_before))

    @property
    def not_done(self) -> int:
        return len(self.failed) + len(self.rejected_before) + self.not_started

    def lines(self, what: str) -> List[str]:
        out = [f"{what}: {self.planned} planned, {self.already_done} already done, {self.finished} generated now, "
               f"{len(self.failed)} failed" + (f", {len(self.rejected_before)} rejected earlier (not asked again: "
                                               "--retry_rejected)" if self.rejected_before else "")
               + (" (stopped at --max_items)" if self.stopped_early else "")]
        out += [f"  failed: {f}" for f in self.failed]
        out += [f"  rejected earlier: {f}" for f in self.rejected_before]
        return out


def skipped_lines(skipped: Sequence[object]) -> List[str]:
    """The report's lines for items skipped before any call (none when nothing was skipped)."""
    return [f"skipped: {len(skipped)}"] + [f"  skipped: {s}" for s in skipped] if skipped else []


def generator_stamp(model: str) -> Dict[str, str]:
    """What every generated record carries: which prompts and which model made it."""
    return {"prompt_version": PROMPT_VERSION, "model": model}


def open_journal(output_dir: PathLike, name: str) -> Journal:
    return Journal(Path(output_dir) / JOURNAL_DIR / f"{name}.journal.jsonl", key_fields=("key",))


def result_of(journal: Journal, key: str) -> Optional[dict]:
    """The journal entry of a call that produced a value (None: not done, or rejected)."""
    record = journal.get((key,))
    return record if record is not None and "value" in record else None


def record_rejection(journal: Journal, key: str, failure: RequestFailed) -> None:
    journal.append({"key": key, "status": REJECTED, "reason": failure.message, "attempts": failure.attempts})


def rejected_before(journal: Journal, key: str) -> Optional[str]:
    """Why a call's replies were rejected in an earlier run (None: it was not)."""
    record = journal.get((key,))
    return record.get("reason", "rejected") if record is not None and record.get("status") == REJECTED else None


def run_calls(client: ChatClient, calls: Sequence[PlannedCall], journal: Journal, *, max_items: Optional[int] = None,
             progress: bool = True, desc: str = "generating", log: Callable[[str], None] = print,
             retry_rejected: bool = False) -> RunSummary:
    summary = RunSummary(planned=len(calls))
    pending = []
    for planned in calls:
        if result_of(journal, planned.key) is not None:
            continue
        reason = rejected_before(journal, planned.key)
        if reason is not None and not retry_rejected:
            summary.rejected_before.append(f"{planned.where}: {reason}")
            continue
        pending.append(planned)
    summary.already_done = len(calls) - len(pending) - len(summary.rejected_before)
    if not pending or max_items == 0:
        summary.stopped_early = bool(pending)
        return summary
    by_key = {planned.key: planned for planned in pending}
    outcomes = client.chat_many(planned.call for planned in pending)  # taken lazily, a few ahead
    with progress_bar(len(pending), desc, progress, unit="call") as bar:
        try:
            for outcome in outcomes:
                bar.update(1)
                planned = by_key[outcome.key]
                if isinstance(outcome, RequestFailed):
                    summary.failed.append(f"{planned.where}: {outcome}")
                    log(f"failed: {planned.where}: {outcome}")
                    if outcome.rejected:  # every reply was turned down: not asked again unless --retry_rejected
                        record_rejection(journal, planned.key, outcome)
                    continue
                journal.append({"key": planned.key, "value": outcome.value, **generator_stamp(outcome.model),
                                "prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens})
                summary.finished += 1
                if max_items is not None and summary.finished >= max_items:
                    summary.stopped_early = summary.finished < len(pending)
                    break
        finally:
            outcomes.close()  # cancels what has not started; calls in flight are dropped
    return summary


# --- command line --------------------------------------------------------------------------------

def add_client_arguments(parser: argparse.ArgumentParser, *, default_max_new_tokens: int) -> None:
    """The endpoint flags (the same as every script's that talks to one: backends.endpoint), the generation
    settings of the requests and the run's own options."""
    group = parser.add_argument_group("model endpoint (any OpenAI-compatible API)")
    add_endpoint_arguments(group, model_required=True)
    group.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    group.add_argument("--max_new_tokens", type=int_at_least(1), default=default_max_new_tokens,
                       help=f"tokens a reply may have at most (the request's max_tokens; "
                            f"default {default_max_new_tokens})")
    add_hidden_alias(group, "--max_tokens", of="--max_new_tokens")
    group.add_argument("--price_input", type=float, default=None, help="USD per million prompt tokens (cost report)")
    group.add_argument("--price_output", type=float, default=None, help="USD per million completion tokens")
    parser.add_argument("--max_items", type=int_at_least(0), default=None,
                        help="stop after this many newly generated items (a trial run; a rerun continues)")
    parser.add_argument("--retry_rejected", action="store_true",
                        help="ask again for items whose replies were all rejected in an earlier run (by default they "
                             "are listed as not done and not paid for again)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")


def generation_client(args: argparse.Namespace) -> ChatClient:
    """The endpoint's client (backends.endpoint.client_from_args) with the run's prices and request settings."""
    prices = None
    if args.price_input is not None or args.price_output is not None:
        prices = Prices(args.price_input or 0.0, args.price_output or 0.0)
    return client_from_args(args, prices=prices,
                            default_params={"temperature": args.temperature, "max_tokens": args.max_new_tokens})


def run_generator_cli(args: argparse.Namespace, generate: Callable[[ChatClient], Any]) -> int:
    """Make the client, claim the output folder (writable, locked, cleared of temporary files of killed
    writes), run generate(client) -> report (with .lines(), .failed, .not_done and .unusable), print
    the report and the token/cost summary. Returns the exit status (see the module doc)."""
    out_root = Path(args.output_dir or args.data_root)
    try:
        client = generation_client(args)
    except ValueError as e:  # no API key, no model
        return _error(e, EXIT_USAGE)
    try:
        folder = claim_output_folder(out_root, [(out_root / JOURNAL_DIR, False), (out_root / "profiles" / args.split, True),
                                                (out_root / "dialogues" / args.split, True)])
    except (FolderBusy, OSError) as e:
        return _error(f"output folder {out_root}: {folder_error_text(e)}", EXIT_UNUSABLE)
    for note in folder.notes:
        print(note, file=sys.stderr)
    try:
        report = _generate(client, generate)
    finally:
        folder.release()
        client.close()
    if isinstance(report, int):
        return report
    for line in report.lines():
        print(line)
    print(client.usage.summary())
    return worst_status(EXIT_UNUSABLE if report.unusable else EXIT_OK, EXIT_INCOMPLETE if report.not_done else EXIT_OK)


def _generate(client: ChatClient, generate: Callable[[ChatClient], Any]):
    """generate(client), or the exit status of the one-line error that stopped it."""
    from ..raw import DialogueError, RawDataError

    try:
        return generate(client)
    except EndpointRejected as e:
        print(f"API usage: {client.usage.summary()}", file=sys.stderr)
        return _error(e, EXIT_USAGE)
    except (CorruptJournal, RawDataError, DialogueError) as e:
        return _error(e, EXIT_UNUSABLE)
    except OSError as e:
        return _error(write_error_message(e) if e.errno in WRITE_ERRNOS else e, EXIT_UNUSABLE)
    except ValueError as e:  # settings that cannot work together (e.g. out-of-distribution counts)
        return _error(e, EXIT_USAGE)


def _error(message: Any, status: int) -> int:
    print(f"error: {redact_keys(str(message))}", file=sys.stderr)
    return status
