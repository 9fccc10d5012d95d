"""The chat prompt format of Qwen-VL-Chat (ChatML) and the decoding of a generated reply.

`make_context` builds exactly the prompt text and token ids the original `model.chat` feeds the
model; `decode_tokens` cuts a reply out of prompt + generated ids the same way the original does.

Prompt layout (chatml):
    <|im_start|>system\n{system}<|im_end|>
    \n<|im_start|>user\n{query_1}<|im_end|>\n<|im_start|>assistant\n{response_1}<|im_end|>   (history)
    \n<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n
Message contents given as strings are encoded as the original does, with only the image-related tags
(`tokenizer.IMAGE_ST`) counted as special tokens: a user typing `<|im_end|>` cannot close a turn, but
`<img>path</img>` in the text is an image the model loads from `path`.

Contents given as `ListContent` (what a server builds from untrusted messages) are list-format parts whose
text is plain text: every special-token string in it, `<img>` and `<ref>` included, is encoded as the
characters it is, and the only image spans are those of the `{"image": name}` parts, in the places
`from_list_format` puts them. For text without special-token strings both give the same ids.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..common.list_format import from_list_format, picture_label

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
CHAT_FORMATS = ("chatml", "raw")



@dataclass(frozen=True)
class ListContent:
    """A message as list-format parts, [{"text": ...} | {"image": name}, ...], whose text is never markup.

    Encoded like `from_list_format(parts)` (images numbered `Picture N: ` per message, each followed by a
    newline), except that text is encoded plainly (`encode_plain`) and an image part becomes the span
    `tokenizer.image_span_ids(name)`: the name is whatever the caller uses to hand the model that image's
    pixels (the model must then be given them, e.g. `image_features`, and never loads the name as a path)."""

    parts: Tuple[Dict[str, str], ...]

    def __post_init__(self) -> None:
        for part in self.parts:
            if set(part) not in ({"text"}, {"image"}) or not isinstance(next(iter(part.values())), str):
                raise ValueError(f"ListContent takes {{'text': str}} or {{'image': str}} parts, got {part!r}")

    @classmethod
    def text(cls, text: str) -> "ListContent":
        return cls(({"text": text},))

    def as_text(self) -> str:
        """The text `from_list_format` gives these parts (what the original would have written)."""
        return from_list_format(self.parts)

    def encode(self, tokenizer: Any) -> List[int]:
        ids: List[int] = []
        pending = ""  # text since the last image, encoded in one piece as the original encodes it
        images = 0
        for part in self.parts:
            if "text" in part:
                pending += part["text"]
                continue
            images += 1
            ids += _plain(tokenizer, pending + picture_label(images)) + tokenizer.image_span_ids(part["image"])
            pending = "\n"
        return ids + _plain(tokenizer, pending)


Content = Union[str, ListContent]
History = Sequence[Tuple[Content, Optional[Content]]]


def _plain(tokenizer: Any, text: str) -> List[int]:
    return tokenizer.encode_plain(unicodedata.normalize("NFC", text)) if text else []


def _as_text(content: Content) -> str:
    return content.as_text() if isinstance(content, ListContent) else content


def _check_chat_format(chat_format: str) -> None:
    if chat_format not in CHAT_FORMATS:
        raise NotImplementedError(f"unknown chat format {chat_format!r} (known: {', '.join(CHAT_FORMATS)})")


def get_stop_words_ids(chat_format: str, tokenizer: Any) -> List[List[int]]:
    """Token-id sequences that end a reply: `<|im_end|>` and `<|im_start|>` for chatml."""
    _check_chat_format(chat_format)
    if chat_format == "raw":
        return [tokenizer.encode("Human:"), [tokenizer.eod_id]]
    return [[tokenizer.im_end_id], [tokenizer.im_start_id]]


def _encode_message(tokenizer: Any, role: str, content: Content) -> Tuple[str, List[int]]:
    """`role\\ncontent` as text and as ids; only image tags count as special tokens in either part (none in a
    ListContent's text)."""
    image_tags = set(tokenizer.IMAGE_ST)
    content_ids = (content.encode(tokenizer) if isinstance(content, ListContent)
                   else tokenizer.encode(content, allowed_special=image_tags))
    ids = tokenizer.encode(role, allowed_special=image_tags) + tokenizer.encode("\n") + content_ids
    return f"{role}\n{_as_text(content)}", ids


def _framed(tokenizer: Any, ids: List[int]) -> List[int]:
    return [tokenizer.im_start_id] + ids + [tokenizer.im_end_id]


def _history_turn(tokenizer: Any, query: Content, response: Optional[Content]) -> Tuple[str, List[int]]:
    """One past turn as (text, ids), each starting with the newline that separates it from what precedes."""
    newline = tokenizer.encode("\n")
    query_text, query_ids = _encode_message(tokenizer, "user", query)
    if response is None:
        # A turn without a reply (the original allows it): the user message and a newline.
        return f"\n{IM_START}{query_text}{IM_END}\n", newline + _framed(tokenizer, query_ids) + newline
    response_text, response_ids = _encode_message(tokenizer, "assistant", response)
    text = f"\n{IM_START}{query_text}{IM_END}\n{IM_START}{response_text}{IM_END}"
    return text, newline + _framed(tokenizer, query_ids) + newline + _framed(tokenizer, response_ids)


def make_context(
    tokenizer: Any,
    query: Content,
    history: Optional[History] = None,
    system: Content = "",
    max_window_size: int = 6144,
    chat_format: str = "chatml",
) -> Tuple[str, List[int]]:
    """The prompt for `query` after `history` as (raw_text, context_tokens).

    History turns are added newest first while system + the turns kept so far + this turn stay
    below `max_window_size` tokens (the current query is not counted); the first turn that does
    not fit drops it and every older turn. A turn's response may be None. Any content may be a
    ListContent (see the module doc); raw_text then holds its `from_list_format` text.
    """
    _check_chat_format(chat_format)
    if chat_format == "raw":
        if isinstance(query, ListContent):
            raise ValueError("the raw chat format takes a string query")
        return query, tokenizer.encode(query)
    newline = tokenizer.encode("\n")
    system_text, system_ids = _encode_message(tokenizer, "system", system)
    system_tokens = _framed(tokenizer, system_ids)

    history_text, history_tokens = "", []
    for turn_query, turn_response in reversed(list(history or [])):
        turn_text, turn_tokens = _history_turn(tokenizer, turn_query, turn_response)
        if len(system_tokens) + len(turn_tokens) + len(history_tokens) >= max_window_size:
            break
        history_text, history_tokens = turn_text + history_text, turn_tokens + history_tokens

    _, query_ids = _encode_message(tokenizer, "user", query)
    raw_text = (
        f"{IM_START}{system_text}{IM_END}{history_text}"
        f"\n{IM_START}user\n{_as_text(query)}{IM_END}\n{IM_START}assistant\n"
    )
    context_tokens = (
        system_tokens
        + history_tokens
        + newline
        + _framed(tokenizer, query_ids)
        + newline
        + [tokenizer.im_start_id]
        + tokenizer.encode("assistant")
        + newline
    )
    return raw_text, context_tokens


def _to_list(tokens: Any) -> List[int]:
    if hasattr(tokens, "tolist"):  # torch tensor or numpy array
        tokens = tokens.tolist()
    return [int(t) for t in tokens]


def _decode_chatml(
    tokens: List[int],
    tokenizer: Any,
    raw_text_len: int,
    context_length: int,
    verbose: bool,
    errors: str,
) -> Tuple[str, str]:
    stop_ids = (tokenizer.im_start_id, tokenizer.im_end_id)
    end_reason = f"Gen length {len(tokens)}"
    # Same cut as the original: at the first stop id after the prompt. When there is none the loop
    # variable is left on the last index, so the last generated token is not part of the reply
    # (this is how the original behaves when max_new_tokens runs out; kept for identical output).
    cut = context_length
    for cut in range(context_length, len(tokens)):
        if tokens[cut] in stop_ids:
            end_reason = f"Gen {tokenizer.decode([tokens[cut]])!r}"
            break
    reply = tokenizer.decode(tokens[:cut], errors=errors)[raw_text_len:]
    if verbose:
        print("\nRaw Generate w/o EOD:", tokenizer.decode(tokens, errors=errors)[raw_text_len:])
        print("\nRaw Generate:", reply)
        print("\nEnd Reason:", end_reason)
    reply = reply.strip()
    if verbose:
        print("\nGenerate:", reply)
    return reply, end_reason


def _decode_raw(tokens: List[int], tokenizer: Any, raw_text_len: int, verbose: bool, errors: str) -> Tuple[str, str]:
    reply = tokenizer.decode(tokens, errors=errors)[raw_text_len:]
    if verbose:
        print("\nRaw Generate: ", reply)
    end_reason = f"Gen length {len(tokens)}"
    reply = reply.replace(ENDOFTEXT, "").strip()
    if ENDOFTEXT in reply:
        end_reason = f"Gen {ENDOFTEXT!r}"
    reply = reply.split(ENDOFTEXT)[0].strip()
    if verbose:
        print("\nEnd Reason:", end_reason)
        print("\nGenerate: ", reply)
    return reply, end_reason


def decode_tokens(
    tokens: Union[Sequence[int], Any],
    tokenizer: Any,
    raw_text_len: int,
    context_length: int,
    chat_format: str = "chatml",
    verbose: bool = False,
    return_end_reason: bool = False,
    errors: str = "replace",
) -> Union[str, Tuple[str, str]]:
    """The reply in `tokens` (prompt + generated ids, 1-D list or tensor), as text.

    chatml: the generated part is cut before the first `<|im_end|>`/`<|im_start|>`, the prompt text
    (`raw_text_len` characters of the decoded ids) removed, and the rest stripped. With
    `return_end_reason`, also returns why generation ended ("Gen '<|im_end|>'" or "Gen length N").
    """
    _check_chat_format(chat_format)
    tokens = _to_list(tokens)
    if chat_format == "chatml":
        reply, end_reason = _decode_chatml(tokens, tokenizer, raw_text_len, context_length, verbose, errors)
    else:
        reply, end_reason = _decode_raw(tokens, tokenizer, raw_text_len, verbose, errors)
    return (reply, end_reason) if return_end_reason else reply


__all__ = ["ListContent", "decode_tokens", "get_stop_words_ids", "make_context"]
