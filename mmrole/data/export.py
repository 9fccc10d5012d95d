"""MMRole-Data for the established fine-tuning stacks (data_prep/export.py).

Input: the sample records this project already writes, so nothing of the protocol is spelled twice:
  - the Qwen-VL fine-tuning format (`build_data.py`'s train.json, `build_RM_data.py`'s reward-model data):
    `{id, system, conversations: [{from: user, value: "Picture 1: <img>PATH</img>\\n" + PROMPT}, {from: assistant,
    value}]}`; the user turns are taken apart into image and text parts, and putting them back together with
    `from_list_format` must give the same bytes, or the record is reported and left out;
  - the published test schema (`{id, system, image, conversations: [PROMPT, GROUND_TRUTH], ...}`), e.g. to run
    the test prompts through another stack.
The system prompt and every text part are copied byte for byte (the role-play and evaluator prompts of
mmrole.common.prompts, as build_data and build_RM_data wrote them). Images are referenced by path, never copied:
`image_dir` is joined in front of each path when given (train.json's paths start with `images/`, relative to the
MMRole-Data folder; test files' are relative to its images/ folder). An absolute image_dir is what both stacks need.

Output formats, one record a line (JSON lines):
  messages   what transformers' chat templates and TRL's SFTTrainer take for vision-language models:
             `{id, messages: [{role: system|user|assistant, content: [{type: image} | {type: text, text}]}],
             images: [path, ...]}`; each `{type: image}` is filled with the next path of `images` (TRL does this,
             and loads the file; so does a processor's apply_chat_template when the part carries the path).
  sharegpt   LLaMA-Factory's multimodal ShareGPT format: `{id, conversations: [{from: human|gpt, value}], system,
             images}`, an `<image>` placeholder where each image goes, plus a `dataset_info.json` entry
             (`formatting: sharegpt`, columns messages/system/images) so `dataset: <name>` finds the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..common.images import image_file_problem
from ..common.list_format import from_list_format
from ..common.problems import Problem
from ..common.records import read_records
from ..common.store import PathLike, atomic_text_writer, atomic_write_json

FORMATS = ("messages", "sharegpt")
LLAMA_FACTORY_IMAGE = "<image>"  # LLaMA-Factory's image placeholder: one per image, in order
DATASET_INFO = "dataset_info.json"
_PICTURE = re.compile(r"Picture (\d+): <img>(.*?)</img>\n", re.DOTALL)
_ROLES = {"user": "user", "assistant": "assistant"}
_SHAREGPT_ROLES = {"user": "human", "assistant": "gpt"}

Part = Dict[str, str]  # {"image": path} or {"text": text}, as mmrole.backends.base.Part


class RecordError(ValueError):
    """A record that cannot be exported (the message says why)."""


@dataclass(frozen=True)
class Conversation:
    """One sample, format-free: the system prompt and the turns as (role, parts), image paths resolved."""

    id: str
    system: Optional[str]
    turns: Tuple[Tuple[str, Tuple[Part, ...]], ...]

    @property
    def images(self) -> List[str]:
        return [part["image"] for _, parts in self.turns for part in parts if "image" in part]


def list_format_parts(value: str) -> List[Part]:
    """A Qwen-VL list-format text ("Picture 1: <img>p</img>\\n...") as parts; RecordError unless rendering the parts
    with from_list_format gives exactly `value` back (numbering, tags and text byte for byte)."""
    parts: List[Part] = []
    position = 0
    for match in _PICTURE.finditer(value):
        if match.start() > position:
            parts.append({"text": value[position:match.start()]})
        parts.append({"image": match.group(2)})
        position = match.end()
    if position < len(value) or not parts:
        parts.append({"text": value[position:]})
    if from_list_format(parts) != value:
        raise RecordError("its user turn is not Qwen-VL's list format (images must read `Picture N: <img>PATH</img>` "
                          "followed by a newline, numbered from 1)")
    return parts


def conversation_of(record: object, place: str, image_dir: Optional[PathLike] = None) -> Conversation:
    """The Conversation of a training record (Qwen-VL format) or a test record (published schema)."""
    if not isinstance(record, dict):
        raise RecordError(f"not a JSON object: got {type(record).__name__}")
    sample_id = str(record["id"]) if record.get("id") is not None else place
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise RecordError(f"`system` must be a string, got {type(system).__name__}")
    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2:
        raise RecordError("`conversations` must hold a user turn and an assistant turn")
    roles = [turn.get("from") if isinstance(turn, dict) else None for turn in turns]
    if any(role not in _ROLES for role in roles) or not all(isinstance(turn.get("value"), str) for turn in turns):
        raise RecordError(f"every turn needs `from` user or assistant and a text `value`, got roles {roles}")
    alternating = all(role == ("user", "assistant")[number % 2] for number, role in enumerate(roles))
    if not alternating or roles[-1] != "assistant":
        raise RecordError(f"turns must alternate user, assistant, ..., ending with the assistant: got {roles}")
    test_image = record.get("image")
    converted = []
    for number, turn in enumerate(turns):
        if turn["from"] == "assistant":
            converted.append(("assistant", ({"text": turn["value"]},)))
        elif number == 0 and isinstance(test_image, str) and "<img>" not in turn["value"]:
            converted.append(("user", ({"image": test_image}, {"text": turn["value"]})))  # test schema: image first
        else:
            converted.append(("user", tuple(list_format_parts(turn["value"]))))
    resolved = tuple((role, tuple({"image": _resolve(p["image"], image_dir)} if "image" in p else p for p in parts))
                     for role, parts in converted)
    return Conversation(sample_id, system, resolved)


def _resolve(path: str, image_dir: Optional[PathLike]) -> str:
    return os.path.join(os.fspath(image_dir), path) if image_dir is not None else path


def messages_record(conversation: Conversation) -> dict:
    """transformers / TRL: typed content parts, images as a list of paths."""
    messages = [{"role": "system", "content": [{"type": "text", "text": conversation.system}]}] \
        if conversation.system is not None else []
    for role, parts in conversation.turns:
        content = [{"type": "image"} if "image" in part else {"type": "text", "text": part["text"]} for part in parts]
        messages.append({"role": _ROLES[role], "content": content})
    return {"id": conversation.id, "messages": messages, "images": conversation.images}


def sharegpt_record(conversation: Conversation) -> dict:
    """LLaMA-Factory: `<image>` where each image goes; RecordError when a text already holds `<image>` (LLaMA-Factory
    would count it as an image)."""
    turns = []
    for role, parts in conversation.turns:
        if any(LLAMA_FACTORY_IMAGE in part.get("text", "") for part in parts):
            raise RecordError(f"its text contains {LLAMA_FACTORY_IMAGE!r}, which LLaMA-Factory reads as an image")
        value = "".join(LLAMA_FACTORY_IMAGE if "image" in part else part["text"] for part in parts)
        turns.append({"from": _SHAREGPT_ROLES[role], "value": value})
    record = {"id": conversation.id, "conversations": turns}
    if conversation.system is not None:
        record["system"] = conversation.system
    record["images"] = conversation.images
    return record


FORMATTERS = {"messages": messages_record, "sharegpt": sharegpt_record}


def dataset_info_entry(file_name: str) -> dict:
    """The dataset_info.json entry of a sharegpt export (LLaMA-Factory's data/README: multimodal sharegpt)."""
    return {"file_name": file_name, "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system", "images": "images"}}


# --- a file --------------------------------------------------------------------------------------------------


@dataclass
class ExportSummary:
    """What one input file became."""

    input_path: str
    outputs: Dict[str, str] = field(default_factory=dict)  # format -> output file
    records: int = 0
    exported: int = 0
    skipped: List[Problem] = field(default_factory=list)
    missing_images: set = field(default_factory=set)  # image files not found (kept unless check_images)


def export_file(input_path: PathLike, output_dir: PathLike, formats: Sequence[str] = FORMATS,
                image_dir: Optional[PathLike] = None, check_images: bool = False) -> ExportSummary:
    """Export one file into output_dir/<stem>.<format>.jsonl, written as records are converted and renamed into
    place when complete; bad records are skipped and listed. DataFileError when the file cannot be read at all."""
    input_path, output_dir = Path(input_path), Path(output_dir)
    summary = ExportSummary(str(input_path))
    entries, summary.skipped = read_records(input_path)
    summary.records = len(entries) + len(summary.skipped)
    summary.outputs = {fmt: str(output_dir / f"{input_path.stem}.{fmt}.jsonl") for fmt in formats}
    seen = set()
    with contextlib.ExitStack() as stack:
        writers = {fmt: stack.enter_context(atomic_text_writer(path)) for fmt, path in summary.outputs.items()}
        for place, record in entries:
            try:
                conversation = conversation_of(record, place, image_dir)
                if conversation.id in seen:
                    raise RecordError("sample id used twice in this file (the first record was exported)")
                seen.add(conversation.id)
                _check_images(conversation, check_images, summary)
                lines = {fmt: json.dumps(FORMATTERS[fmt](conversation), ensure_ascii=False) for fmt in formats}
            except RecordError as e:
                sample_id = record.get("id") if isinstance(record, dict) and record.get("id") is not None else place
                summary.skipped.append(Problem(str(input_path), str(sample_id), str(e)))
                continue
            for fmt, line in lines.items():
                writers[fmt].write(line + "\n")
            summary.exported += 1
    return summary


def _check_images(conversation: Conversation, check_images: bool, summary: ExportSummary) -> None:
    for path in conversation.images:
        if check_images:
            problem = image_file_problem(path)
            if problem:
                raise RecordError(f"{problem}: {path}")
        elif not os.path.isfile(path):
            summary.missing_images.add(path)


def update_dataset_info(output_dir: PathLike, entries: Dict[str, dict]) -> Path:
    """Add (or replace) entries in output_dir/dataset_info.json, keeping the others; ValueError when the existing
    file is not a JSON object."""
    path = Path(output_dir) / DATASET_INFO
    info: Union[dict, object] = {}
    if path.exists():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot be read as JSON ({e}); move it away or fix it") from e
        if not isinstance(info, dict):
            raise ValueError(f"{path}: not a JSON object of datasets; move it away or fix it")
    info.update(entries)
    atomic_write_json(path, info, indent=2)
    return path
