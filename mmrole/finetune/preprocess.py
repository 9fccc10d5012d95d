"""Supervised fine-tuning tensors in the original Qwen-VL layout: ChatML text, labels -100 where nothing is learned.

One conversation becomes

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n{value}<|im_end|>\\n
    <|im_start|>assistant\\n{value}<|im_end|>\\n ...

and its labels copy the ids except (exactly as the original finetune.py):
- system and user turns: everything between the opening <|im_start|> and the closing <|im_end|> is -100; the
  <|im_start|>, <|im_end|> and the "\\n" after it stay labels;
- assistant turns: only the role name and its "\\n" are -100; the reply, <|im_end|> and "\\n" are learned.
A conversation that opens with an assistant turn loses that turn. Ids and labels are then cut at max_len.

The original also right-padded every sample to max_len; `pad_to_length` and `collate_padded` do the padding
(to max_len for the original's tensors, or to the longest sample of a batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import torch

IGNORE_INDEX = -100  # what the Trainer's LabelSmoother and the model's loss ignore
DEFAULT_SYSTEM = "You are a helpful assistant."
USER, ASSISTANT = "user", "assistant"
ROLES = (USER, ASSISTANT)


@dataclass
class Tokenized:
    """One conversation as unpadded ids and labels (same length, at most max_len).

    full_length: the length before truncation. answer_start: the position of the first learned token of the first
    assistant turn (its reply, or its <|im_end|> when the reply is empty) in the untruncated sequence.
    """

    input_ids: List[int]
    labels: List[int]
    full_length: int
    answer_start: int

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)

    @property
    def has_answer(self) -> bool:
        """Whether any assistant token survived truncation (the framing tokens of system and user turns are
        learned too, but a sample cut before its first answer teaches nothing of what it is for)."""
        return self.answer_start < len(self.input_ids)


class ChatMLEncoder:
    """Turns conversations into ids and labels with a Qwen tokenizer (encodes like the original's `tokenizer(text)`)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.im_start = tokenizer.im_start_id
        self.im_end = tokenizer.im_end_id
        self.newline = self.encode("\n")
        self.image_start = tokenizer.img_start_id
        self.image_end = tokenizer.img_end_id
        # "<|im_start|>user" etc., encoded as one string like the original (-> [im_start, role id]).
        self.role_ids = {role: self.encode(f"<|im_start|>{role}") for role in ("system",) + ROLES}

    def encode(self, text: str) -> List[int]:
        """All special tokens allowed, <img> spans expanded to 258 ids: what `tokenizer(text).input_ids` gives."""
        encode_to_ids = getattr(self.tokenizer, "encode_to_ids", None)
        return encode_to_ids(text) if encode_to_ids is not None else self.tokenizer(text).input_ids

    def _turn(self, role: str, text: str) -> tuple:
        """(ids, labels) of one ChatML block: role header, text, <|im_end|>, newline."""
        header = self.role_ids[role] + self.newline
        body = self.encode(text)
        ids = header + body + [self.im_end] + self.newline
        if role == ASSISTANT:
            inner = [IGNORE_INDEX] * (len(header) - 1) + body  # only the role name and its newline are hidden
        else:
            inner = [IGNORE_INDEX] * (len(header) - 1 + len(body))
        labels = [self.im_start] + inner + [self.im_end] + self.newline
        return ids, labels

    def encode_conversation(
        self, conversations: Sequence[Mapping[str, str]], system: str, max_len: int
    ) -> Tokenized:
        """conversations: [{"from": "user"|"assistant", "value": str}, ...] (already validated)."""
        turns = list(conversations)
        if turns and turns[0]["from"] != USER:
            turns = turns[1:]  # the original drops an opening assistant turn
        ids, labels = self._turn("system", system)
        answer_start = None
        for turn in turns:
            if turn["from"] == ASSISTANT and answer_start is None:
                answer_start = len(ids) + len(self.role_ids[ASSISTANT]) + len(self.newline)
            turn_ids, turn_labels = self._turn(turn["from"], turn["value"])
            ids += turn_ids
            labels += turn_labels
        cut = self._safe_cut(ids, max_len)
        return Tokenized(ids[:cut], labels[:cut], len(ids), answer_start if answer_start is not None else len(ids))

    def _safe_cut(self, ids: Sequence[int], max_len: int) -> int:
        """max_len, or the start of an image span that max_len would cut in two (the model needs whole spans)."""
        if len(ids) <= max_len:
            return len(ids)
        last_start = max((i for i in range(max_len) if ids[i] == self.image_start), default=-1)
        if last_start >= 0 and self.image_end not in ids[last_start:max_len]:
            return last_start
        return max_len


def pad_to_length(values: Sequence[int], length: int, pad_value: int) -> List[int]:
    return list(values) + [pad_value] * (length - len(values))


def collate_padded(
    items: Sequence[Tokenized], pad_token_id: int, length: Optional[int] = None
) -> Dict[str, torch.Tensor]:
    """Right-pad a batch to `length` (default: its longest sample).

    Returns input_ids/labels [B, L] int64 and attention_mask [B, L] int64 = (input_ids != pad_token_id), the
    original's mask (a literal <|endoftext|> inside a text is masked too, as it was there).
    """
    length = length if length is not None else max(len(item.input_ids) for item in items)
    input_ids = torch.tensor([pad_to_length(item.input_ids, length, pad_token_id) for item in items], dtype=torch.long)
    labels = torch.tensor([pad_to_length(item.labels, length, IGNORE_INDEX) for item in items], dtype=torch.long)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": input_ids.ne(pad_token_id).long()}


def original_preprocess(
    conversations_list: Sequence[Sequence[Mapping[str, str]]],
    tokenizer,
    max_len: int,
    system_message: str = DEFAULT_SYSTEM,
) -> Dict[str, torch.Tensor]:
    """The original `preprocess(sources, tokenizer, max_len)`: one system message for every sample, each sample
    right-padded with <|endoftext|> to max_len and cut there. Returns input_ids, labels, attention_mask [N, max_len]."""
    encoder = ChatMLEncoder(tokenizer)
    items = [encoder.encode_conversation(conversations, system_message, max_len) for conversations in conversations_list]
    return collate_padded(items, tokenizer.pad_token_id, length=max_len)
