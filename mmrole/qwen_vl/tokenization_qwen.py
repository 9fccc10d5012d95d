"""The Qwen-VL-Chat tokenizer: tiktoken BPE over `qwen.tiktoken` plus the Qwen-VL special tokens.

Token ids, image-span expansion and decoding match the original remote code of Qwen-VL-Chat, so
prompts, fine-tuning labels and generated ids agree with the released checkpoints.

Layout of the id space (151,860 ids):
    0 .. 151642        BPE ranks from `qwen.tiktoken`
    151643             <|endoftext|>   (eod; also our pad token, see below)
    151644 / 151645    <|im_start|> / <|im_end|>
    151646 .. 151850   <|extra_0|> .. <|extra_204|>
    151851 .. 151856   <ref> </ref> <box> </box> <quad> </quad>
    151857 .. 151859   <img> </img> <imgpad>

An image is written `<img>path</img>` in text. Encoding turns the path's UTF-8 bytes into ids one
for one (byte value b -> id b), pads with `<imgpad>` to IMAGE_SPAN_LENGTH (256) and keeps the two
tags, so every image takes 258 positions; the model reads the path back from those ids and puts
256 visual features there. Decoding turns such a span back into `<img>path</img>`.
"""

from __future__ import annotations

import base64
import os
import unicodedata
from typing import Any, Callable, Collection, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import tiktoken
from transformers import AddedToken, PreTrainedTokenizer

from ..common.list_format import DEFAULT_TAGS, from_list_format  # noqa: F401  (re-exported)
from .configuration_qwen import local_only

VOCAB_FILE_NAME = "qwen.tiktoken"
VOCAB_FILES_NAMES = {"vocab_file": VOCAB_FILE_NAME}

# The pre-tokenisation regex of Qwen's BPE (same as the original; it decides every token boundary).
PAT_STR = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
ENDOFTEXT = "<|endoftext|>"
IMSTART = "<|im_start|>"
IMEND = "<|im_end|>"
EXTRAS = tuple(f"<|extra_{i}|>" for i in range(205))
CHAT_SPECIAL_TOKENS = (ENDOFTEXT, IMSTART, IMEND) + EXTRAS
# Positions between <img> and </img>: one per visual feature of the resampler.
IMAGE_SPAN_LENGTH = 256
TokenType = Union[bytes, str]


def load_tiktoken_ranks(vocab_file: Union[str, os.PathLike]) -> Dict[bytes, int]:
    """Read a `.tiktoken` file: one `base64(token) rank` pair per line."""
    ranks: Dict[bytes, int] = {}
    with open(vocab_file, "rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                token_b64, rank = line.split()
                ranks[base64.b64decode(token_b64)] = int(rank)
            except ValueError as error:
                raise ValueError(f"{vocab_file}:{line_number}: not a `base64 rank` line ({error})") from None
    return ranks


def find_closed_spans(
    items: Sequence[Any],
    start_tags: Sequence[Any],
    end_tags: Sequence[Any],
    what: str = "the input",
    name_of: Callable[[Any], str] = repr,
    allow_unclosed: bool = False,
) -> List[Tuple[int, int]]:
    """(start, end) index pairs (inclusive) of every `start_tags[k] ... end_tags[k]` span, left to right.

    A start tag opens a span that runs to the first matching end tag after it; spans do not nest.
    A start tag without its end tag raises ValueError naming the tag (`name_of(tag)`) and `what`,
    or, with `allow_unclosed`, ends the search (the rest is left outside any span).
    """
    spans = []
    position = 0
    while position < len(items):
        item = items[position]
        if item in start_tags:
            end_tag = end_tags[list(start_tags).index(item)]
            try:
                end = list(items[position + 1 :]).index(end_tag) + position + 1
            except ValueError:
                if allow_unclosed:
                    break
                raise ValueError(f"unclosed {name_of(item)}: no {name_of(end_tag)} follows it in {what}") from None
            spans.append((position, end))
            position = end + 1
        else:
            position += 1
    return spans


def _map_spans(
    items: Sequence[Any],
    spans: List[Tuple[int, int]],
    inside: Callable[[Sequence[Any]], List[Any]],
    outside: Callable[[Sequence[Any]], List[Any]] = list,
) -> List[Any]:
    """Rebuild `items`, replacing each span (tags included) by `inside(span)` and the gaps by `outside(gap)`."""
    out: List[Any] = []
    previous_end = 0
    for start, end in spans:
        out.extend(outside(items[previous_end:start]))
        out.extend(inside(items[start : end + 1]))
        previous_end = end + 1
    out.extend(outside(items[previous_end:]))
    return out


def image_path_bytes(span_ids: Sequence[int], img_pad_id: int) -> bytes:
    """The path bytes held by the ids strictly between `<img>` and `</img>` (cut at the first pad)."""
    inner = list(span_ids)
    if img_pad_id in inner:
        inner = inner[: inner.index(img_pad_id)]
    bad = [i for i in inner if not 0 <= i < 256]
    if bad:
        raise ValueError(f"image span holds ids that are not bytes: {bad[:5]}")
    return bytes(inner)


class QWenTokenizer(PreTrainedTokenizer):
    """Qwen-VL-Chat tokenizer with the original's ids, attributes and options.

    `tokenize` returns the original's token forms (bytes for BPE tokens, str for special tokens);
    `encode`/`__call__` accept `allowed_special` ("all" by default, or a set of special-token
    strings to treat as special; the others become plain text) and `disallowed_special`.
    `decode` accepts `skip_special_tokens`, `keep_image_special` and `errors`.

    Padding: the original had no pad token. Here `pad_token` defaults to `<|endoftext|>`
    (151643 = `eod_id`), the id the original fine-tuning script and generation_config.json use
    for padding, so `tokenizer(batch, padding=True)` and HF data collators work unchanged.
    Pass `pad_token=None` to get the original's "no pad token" behaviour.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    # The model takes no token_type_ids; leaving them out keeps `model(**tokenizer(...))` clean.
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: Optional[str] = None,
        errors: str = "replace",
        pad_token: Optional[str] = ENDOFTEXT,
        **kwargs: Any,
    ):
        """`kwargs` may rename the tags (keys of DEFAULT_TAGS, e.g. image_start_tag="<img>"), as in the original;
        the rest goes to transformers' tokenizer base class."""
        if vocab_file is None or not os.path.isfile(vocab_file):
            where = kwargs.get("name_or_path") or vocab_file
            # ValueError, not OSError: transformers replaces OSErrors from __init__ by a generic message.
            raise ValueError(f"QWenTokenizer needs the BPE ranks file {VOCAB_FILE_NAME}; not found at {where!r}")
        self.vocab_file = str(vocab_file)
        self.errors = errors
        tags = {name: kwargs.pop(name, default) for name, default in DEFAULT_TAGS.items()}
        for name, value in tags.items():
            setattr(self, name, value)
        self.IMAGE_ST = tuple(tags.values())  # DEFAULT_TAGS order = id order

        self.mergeable_ranks = load_tiktoken_ranks(self.vocab_file)
        self.special_tokens = {
            token: index
            for index, token in enumerate(CHAT_SPECIAL_TOKENS + self.IMAGE_ST, start=len(self.mergeable_ranks))
        }
        self.tokenizer = self._build_encoding()
        self.decoder: Dict[int, TokenType] = {rank: token for token, rank in self.mergeable_ranks.items()}
        self.decoder.update({index: token for token, index in self.special_tokens.items()})

        self.eod_id = self.special_tokens[ENDOFTEXT]
        self.im_start_id = self.special_tokens[IMSTART]
        self.im_end_id = self.special_tokens[IMEND]
        (
            self.ref_start_id, self.ref_end_id,
            self.box_start_id, self.box_end_id,
            self.quad_start_id, self.quad_end_id,
            self.img_start_id, self.img_end_id,
            self.img_pad_id,
        ) = (self.special_tokens[tag] for tag in self.IMAGE_ST)  # fmt: skip
        # Kept by decode(skip_special_tokens=True, keep_image_special=True), as in the original.
        self.image_special_tokens = {
            self.ref_start_id, self.ref_end_id,
            self.box_start_id, self.box_end_id,
            self.quad_start_id, self.quad_end_id,
        }  # fmt: skip

        super().__init__(errors=errors, pad_token=pad_token, **tags, **kwargs)

    def _build_encoding(self) -> tiktoken.Encoding:
        encoding = tiktoken.Encoding(
            "Qwen", pat_str=PAT_STR, mergeable_ranks=self.mergeable_ranks, special_tokens=self.special_tokens
        )
        expected = len(self.mergeable_ranks) + len(self.special_tokens)
        if encoding.n_vocab != expected:
            raise ValueError(f"{self.vocab_file}: ranks are not contiguous ({encoding.n_vocab} ids != {expected})")
        return encoding

    # tiktoken.Encoding is rebuilt rather than pickled (DataLoader workers, deepcopy).
    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("tokenizer", None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.tokenizer = self._build_encoding()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *args: Any, **kwargs: Any):
        """Load from a local folder holding `qwen.tiktoken` (never from a hub, never remote code)."""
        folder = local_only(pretrained_model_name_or_path, kwargs, "QWenTokenizer.from_pretrained")
        if not (folder / VOCAB_FILE_NAME).is_file():
            raise FileNotFoundError(f"QWenTokenizer.from_pretrained: no {VOCAB_FILE_NAME} in folder {str(folder)!r}")
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    # ---- vocabulary -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.tokenizer.n_vocab

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.n_vocab

    def get_vocab(self) -> Dict[TokenType, int]:
        """Every token form to its id: bytes for BPE tokens, str for special tokens."""
        return {**self.mergeable_ranks, **self.special_tokens}

    def _token_to_id(self, token: TokenType) -> Optional[int]:
        if isinstance(token, AddedToken):
            token = token.content
        if isinstance(token, str):
            if token in self.special_tokens:
                return self.special_tokens[token]
            token = token.encode("utf-8")
        return self.mergeable_ranks.get(token)

    def convert_tokens_to_ids(self, tokens: Union[TokenType, Iterable[TokenType]]) -> Union[Optional[int], List]:
        """Token form(s) to id(s); an unknown token gives None, as in the original."""
        if isinstance(tokens, (str, bytes, AddedToken)):
            return self._token_to_id(tokens)
        return [self._token_to_id(token) for token in tokens]

    def _convert_token_to_id(self, token: TokenType) -> int:
        index = self._token_to_id(token)
        if index is None:
            raise ValueError(f"unknown token {token!r}")
        return index

    def _convert_token_to_id_with_added_voc(self, token: TokenType) -> int:
        return self._convert_token_to_id(token)

    def _convert_id_to_token(self, index: int) -> TokenType:
        if index in self.decoder:
            return self.decoder[index]
        raise ValueError(f"unknown token id {index} (the vocabulary has ids 0..{len(self) - 1})")

    def _add_tokens(self, new_tokens: Sequence[Union[str, AddedToken]], special_tokens: bool = False) -> int:
        """The id space is fixed: only the existing special tokens may be 'added' (a no-op)."""
        for token in new_tokens:
            surface = token.content if isinstance(token, AddedToken) else token
            if surface not in self.special_tokens:
                raise ValueError(
                    f"QWenTokenizer cannot add the token {surface!r}: its vocabulary is fixed "
                    "(only the existing special tokens can be named, e.g. pad_token='<|endoftext|>')"
                )
        return 0

    def save_vocabulary(self, save_directory: str, filename_prefix: Optional[str] = None) -> Tuple[str]:
        """Write `qwen.tiktoken` (ranks in id order) into `save_directory`."""
        name = f"{filename_prefix}-{VOCAB_FILE_NAME}" if filename_prefix else VOCAB_FILE_NAME
        path = os.path.join(save_directory, name)
        lines = (
            base64.b64encode(token).decode("ascii") + f" {rank}\n"
            for token, rank in sorted(self.mergeable_ranks.items(), key=lambda item: item[1])
        )
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        os.replace(temporary, path)
        return (path,)

    # ---- encoding ---------------------------------------------------------------------------

    def encode_to_ids(
        self,
        text: str,
        allowed_special: Union[Set[str], str] = "all",
        disallowed_special: Union[Collection[str], str] = (),
    ) -> List[int]:
        """Text to ids: NFC, tiktoken BPE, then each `<img>path</img>` span expanded to 258 ids."""
        text = unicodedata.normalize("NFC", text)
        ids = self.tokenizer.encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)
        if self.img_start_id not in ids:
            return ids
        spans = find_closed_spans(
            ids, (self.img_start_id,), (self.img_end_id,), what=f"the text {_preview(text)}", name_of=self._token_name
        )
        return _map_spans(ids, spans, self._expand_image_span)

    def _expand_image_span(self, span_ids: Sequence[int]) -> List[int]:
        return self._image_span(b"".join(self._token_bytes(i) for i in span_ids[1:-1]))

    def image_span_ids(self, name: str) -> List[int]:
        """The 258 ids of an image span naming `name` (UTF-8, at most IMAGE_SPAN_LENGTH bytes), exactly as
        encoding `<img>name</img>` gives them; for callers that build prompt ids themselves."""
        return self._image_span(name.encode("utf-8"))

    def _image_span(self, path: bytes) -> List[int]:
        if len(path) > IMAGE_SPAN_LENGTH:
            raise ValueError(
                f"image path {path.decode('utf-8', errors='replace')!r} is {len(path)} bytes long; "
                f"{self.image_start_tag}...{self.image_end_tag} holds at most {IMAGE_SPAN_LENGTH}"
            )
        padding = [self.img_pad_id] * (IMAGE_SPAN_LENGTH - len(path))
        return [self.img_start_id, *path, *padding, self.img_end_id]

    def encode_plain(self, text: str) -> List[int]:
        """Text to ids with every special-token string (`<|im_end|>`, `<img>`, `<ref>`, ...) encoded as the plain
        characters it is: the result never holds a special token, so it cannot name an image or end a turn."""
        return self.encode_to_ids(text, allowed_special=set(), disallowed_special=())

    def _token_name(self, index: int) -> str:
        return repr(self.decoder[index])

    def _token_bytes(self, index: int) -> bytes:
        token = self.decoder[index]
        return token.encode("utf-8") if isinstance(token, str) else token

    def tokenize(
        self,
        text: str,
        allowed_special: Union[Set[str], str] = "all",
        disallowed_special: Union[Collection[str], str] = (),
        **kwargs: Any,
    ) -> List[TokenType]:
        """Text to token forms (bytes for BPE tokens, str for special tokens), image spans expanded.

        `split_special_tokens=True` (a transformers option) encodes special-token text as plain text.
        """
        if kwargs.get("split_special_tokens", self.split_special_tokens):
            allowed_special = set()
        ids = self.encode_to_ids(text, allowed_special=allowed_special, disallowed_special=disallowed_special)
        return [self.decoder[i] for i in ids]

    def _tokenize(self, text: str, **kwargs: Any) -> List[TokenType]:
        return self.tokenize(text, **kwargs)

    def convert_tokens_to_string(self, tokens: Sequence[TokenType]) -> str:
        """Join token forms: runs of bytes are decoded with `self.errors`, special tokens kept as text."""
        pieces: List[str] = []
        pending = b""
        for token in tokens:
            if isinstance(token, bytes):
                pending += token
                continue
            if not isinstance(token, str):
                raise TypeError(f"a token must be bytes or str, got {type(token).__name__}")
            if pending:
                pieces.append(pending.decode("utf-8", errors=self.errors))
                pending = b""
            pieces.append(token)
        if pending:
            pieces.append(pending.decode("utf-8", errors=self.errors))
        return "".join(pieces)

    # ---- decoding ---------------------------------------------------------------------------

    def _decode(
        self,
        token_ids: Union[int, Sequence[int]],
        skip_special_tokens: bool = False,
        errors: Optional[str] = None,
        keep_image_special: bool = False,
        **kwargs: Any,
    ) -> str:
        """Ids to text. Image spans become `<img>path</img>`; `skip_special_tokens` drops every special
        token (image tags too) except, with `keep_image_special`, the ref/box/quad tags.

        An `<img>` never closed is decoded as plain tokens (the original raised; model output may hold one).
        """
        ids = [int(token_ids)] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        unknown = [i for i in ids if i not in self.decoder]
        if unknown:
            raise ValueError(f"cannot decode unknown token ids {unknown[:5]} (vocabulary: ids 0..{len(self) - 1})")
        # Image spans are turned into ("byte", b) items for the path so they decode as text.
        items: List[Any] = ids
        if self.img_start_id in ids:
            # Lenient where the original raised: generated ids may hold an <img> that never closes.
            spans = find_closed_spans(ids, (self.img_start_id,), (self.img_end_id,), allow_unclosed=True)
            items = _map_spans(ids, spans, self._image_span_as_items)
        if skip_special_tokens:
            kept = self.image_special_tokens if keep_image_special else set()
            items = [i for i in items if isinstance(i, bytes) or i < self.eod_id or i in kept]
        data = b"".join(i if isinstance(i, bytes) else self._token_bytes(i) for i in items)
        return data.decode("utf-8", errors=errors or self.errors)

    def _image_span_as_items(self, span_ids: Sequence[int]) -> List[Any]:
        path = image_path_bytes(span_ids[1:-1], self.img_pad_id)
        return [self.img_start_id, path, self.img_end_id]

    # ---- the original's list format ---------------------------------------------------------

    def from_list_format(self, list_format: Sequence[Dict[str, Any]]) -> str:
        """The prompt text of a list of elements (see the module-level `from_list_format`), with this
        tokenizer's tag strings."""
        return from_list_format(list_format, {name: getattr(self, name) for name in DEFAULT_TAGS})

    def to_list_format(self, text: str) -> List[Dict[str, str]]:
        """Prompt text -> list of {'text'|'image'|'ref'|'box'|'quad': str} elements (inverse of from_list_format)."""
        text = unicodedata.normalize("NFC", text)
        ids = self.tokenizer.encode(text, allowed_special=set(self.IMAGE_ST + (ENDOFTEXT,)))
        starts = (self.img_start_id, self.ref_start_id, self.box_start_id, self.quad_start_id)
        ends = (self.img_end_id, self.ref_end_id, self.box_end_id, self.quad_end_id)
        keys = dict(zip(starts, ("image", "ref", "box", "quad")))
        spans = find_closed_spans(ids, starts, ends, what=f"the text {_preview(text)}", name_of=self._token_name)

        def tagged(span: Sequence[int]) -> List[Dict[str, str]]:
            return [{keys[span[0]]: self._ids_to_strict_text(span[1:-1])}]

        def plain(gap: Sequence[int]) -> List[Dict[str, str]]:
            return [{"text": self._ids_to_strict_text(gap)}] if gap else []

        return _map_spans(ids, spans, tagged, plain)

    def _ids_to_strict_text(self, ids: Sequence[int]) -> str:
        return b"".join(self._token_bytes(i) for i in ids).decode("utf-8")


def _preview(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def register_with_auto_tokenizer() -> None:
    """Make `AutoTokenizer.from_pretrained(folder)` pick QWenTokenizer for `tokenizer_class: QWenTokenizer`.

    Registered by class name only, deliberately not in TOKENIZER_MAPPING: in transformers 5 a tokenizer
    class named in tokenizer_config.json counts as "explicit local code" only while its config type is
    absent from TOKENIZER_MAPPING, and only explicit local code wins over a folder's `auto_map`
    when the caller passes `trust_remote_code=True` (as the original MMRole scripts do). Registered by
    name, a downloaded tokenization_qwen.py is never imported.
    """
    from transformers.models.auto import tokenization_auto

    registry = getattr(tokenization_auto, "REGISTERED_TOKENIZER_CLASSES", None)
    if not isinstance(registry, dict):
        raise RuntimeError(
            "this transformers version has no REGISTERED_TOKENIZER_CLASSES; QWenTokenizer cannot be registered "
            "safely (check mmrole.qwen_vl.tokenization_qwen.register_with_auto_tokenizer)"
        )
    registry[QWenTokenizer.__name__] = QWenTokenizer


__all__ = [
    "DEFAULT_TAGS",
    "IMAGE_SPAN_LENGTH",
    "QWenTokenizer",
    "VOCAB_FILE_NAME",
    "find_closed_spans",
    "from_list_format",
    "image_path_bytes",
    "register_with_auto_tokenizer",
]


# Registered where it is defined (by class name, see register_with_auto_tokenizer): importing this module makes
# AutoTokenizer.from_pretrained load a Qwen-VL-Chat folder's tokenizer as a QWenTokenizer.
register_with_auto_tokenizer()
