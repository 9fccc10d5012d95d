"""Write a tiny random checkpoint of a current vision-language family, made locally, for tests and trying the
`transformers` backend and the TRL recipe without weights:

    python -m mmrole.tiny --family qwen2_5_vl --output_dir DIR [--seed N] [--hidden_size 32 ...]

Family `qwen2_5_vl` (Qwen2.5-VL): random weights from transformers' own `Qwen2_5_VLConfig` and
`Qwen2_5_VLForConditionalGeneration` at a tiny size (the real vocabulary size and special-token ids), and the
folder a released Qwen2.5-VL-Instruct download has: config.json, generation_config.json, model.safetensors,
tokenizer.json + tokenizer_config.json, preprocessor_config.json (the family's image processor settings, with a
small pixel budget so images cost a few tokens) and chat_template.json.

The tokenizer is converted from the real Qwen vocabulary, dashscope's `qwen.tiktoken` (the same file the tiny
Qwen-VL-Chat checkpoint copies; nothing is downloaded): Qwen2's byte-level BPE vocabulary is that list of 151,643
tokens with the same ids, followed by its special tokens. tokenizer.json gets those ranks as vocabulary, one merge
per multi-byte token (the two parts byte-pair merging reaches when it may only use lower ranks: what tiktoken's
rank order does), Qwen's pre-tokenisation regex, NFC normalisation (the Qwen tokenizers normalise too) and the
special tokens of Qwen2.5-VL at their ids. tests/demo/test_tiny_vlm.py checks that it encodes real MMRole text
(English and Chinese) exactly as tiktoken does with the same ranks.

The chat template renders the Qwen2.5-VL chat format (ChatML; "You are a helpful assistant." when a conversation
has no system message; an image part becomes `<|vision_start|><|image_pad|><|vision_end|>`, which the processor
expands to the image's tokens). It marks assistant turns with `{% generation %}` so TRL's `assistant_only_loss`
can learn from assistant tokens only (the released template has no such marks; TRL swaps in a marked copy of it).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..common.cli import ArgumentParser
from .tiny import QWEN_BPE_RANKS, VOCAB_SIZE, check_vocab_file, find_vocab_file, write_as_command

FAMILIES = ("qwen2_5_vl",)

# Qwen's pre-tokenisation regex (Qwen2 keeps Qwen's: single digits, letters with one leading non-letter).
QWEN2_PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Qwen2.5-VL's added tokens, in id order from 151643 (right after the BPE ranks). The first 14 are special
# (never split, dropped by skip_special_tokens); the others are ordinary added tokens, as released.
QWEN2_5_VL_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
QWEN2_5_VL_ADDED_TOKENS = (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
ENDOFTEXT_ID, IM_END_ID = 151643, 151645
IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, VISION_START_ID, VISION_END_ID = 151655, 151656, 151652, 151653

# The family's image processor: patches of 14 pixels, 2x2 merged into one token, CLIP's mean and std. The released
# budget is 3,136 to 12,845,056 pixels; the tiny default caps an image at 16 tokens.
IMAGE_PROCESSOR_SETTINGS = {
    "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
}

_NEWLINE = "{{ '\\n' }}"  # emitted as an expression: transformers renders templates with trim_blocks
_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system" + _NEWLINE + "You are a helpful assistant.<|im_end|>" + _NEWLINE + "{% endif %}"
    "<|im_start|>{{ message['role'] }}" + _NEWLINE
    + "{% if message['role'] == 'assistant' %}{% generation %}" + _CONTENT + "<|im_end|>{% endgeneration %}"
    + _NEWLINE + "{% else %}" + _CONTENT + "<|im_end|>" + _NEWLINE + "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant" + _NEWLINE + "{% endif %}"
)


@dataclass(frozen=True)
class TinyVLMSizes:
    """Sizes of the tiny model. The text model's 151,936-row embedding (tied with the output layer, as in
    Qwen2.5-VL-3B) dominates; hidden_size stays small so a training step on a real MMRole sample is quick."""

    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    vision_hidden_size: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    max_position_embeddings: int = 32768
    min_pixels: int = 28 * 28 * 4
    max_pixels: int = 28 * 28 * 16
    # Weights are normal(0, init_std / 1000) (an int flag like the sizes): 0.2, ten times transformers' 0.02,
    # because at 0.02 every prompt of a model this small gets the same token over and over; at 0.2 greedy answers
    # depend on the prompt, which the tests of batching need.
    init_std_per_mille: int = 200

    def validate(self) -> None:
        if min(asdict(self).values()) < 1:
            raise ValueError(f"all sizes must be positive: {self}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 8:
            raise ValueError(f"hidden_size / num_heads must be a multiple of 8 (multimodal rotary sections), got "
                             f"{self.hidden_size} / {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.vision_hidden_size % self.vision_heads or (self.vision_hidden_size // self.vision_heads) % 4:
            raise ValueError(f"vision_hidden_size / vision_heads must be a multiple of 4, got "
                             f"{self.vision_hidden_size} / {self.vision_heads}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} is larger than max_pixels {self.max_pixels}")


# --- the tokenizer ---------------------------------------------------------------------------------------------


def merge_pairs(ranks: Mapping[bytes, int]) -> List[Tuple[bytes, bytes]]:
    """One merge per multi-byte token, in rank order: the two parts that byte-pair merging of the token's bytes
    ends with when only lower ranks may be used (tiktoken merges the adjacent pair of lowest rank first, so this
    is the last merge it makes on the way to the token). ValueError when a token cannot be reached that way."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            candidates = [(ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1)]
            best, at = min(candidates)
            if best >= rank:
                break
            parts[at:at + 2] = [parts[at] + parts[at + 1]]
        if len(parts) != 2:
            raise ValueError(f"BPE token of rank {rank} ({token!r}) cannot be made from two lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges


def qwen2_tokenizer(vocab_file: Union[str, Path]):
    """A `tokenizers.Tokenizer` of Qwen2.5-VL from Qwen's tiktoken ranks (see the module docstring)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from ..qwen_vl.tokenization_qwen import load_tiktoken_ranks

    ranks = load_tiktoken_ranks(check_vocab_file(vocab_file))
    byte_to_char = bytes_to_unicode()

    def spelled(token: bytes) -> str:  # byte-level BPE spells each byte as one printable character
        return "".join(byte_to_char[byte] for byte in token)

    vocab = {spelled(token): rank for token, rank in ranks.items()}
    merges = [(spelled(left), spelled(right)) for left, right in merge_pairs(ranks)]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_5_VL_SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN2_5_VL_ADDED_TOKENS])
    first = tokenizer.token_to_id(QWEN2_5_VL_SPECIAL_TOKENS[0])
    if first != QWEN_BPE_RANKS or tokenizer.token_to_id("<|image_pad|>") != IMAGE_TOKEN_ID:
        raise ValueError(f"{vocab_file}: special tokens did not land on Qwen2.5-VL's ids (first at {first})")
    return tokenizer


def tokenizer_config(sizes: TinyVLMSizes) -> Dict[str, object]:
    return {
        "tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "bos_token": None, "unk_token": None, "errors": "replace", "add_prefix_space": False,
        "clean_up_tokenization_spaces": False, "split_special_tokens": False,
        "model_max_length": sizes.max_position_embeddings,
        "additional_special_tokens": list(QWEN2_5_VL_SPECIAL_TOKENS[1:]),
    }


# --- the model -------------------------------------------------------------------------------------------------


def tiny_qwen2_5_vl_config(sizes: TinyVLMSizes = TinyVLMSizes()):
    """A Qwen2_5_VLConfig of the real layout (vocabulary, special ids, patch and merge sizes) at tiny sizes."""
    from transformers import Qwen2_5_VLConfig

    sizes.validate()
    half_head = sizes.hidden_size // sizes.num_heads // 2  # rotary frequencies, split over time, height, width
    mrope_section = [half_head - 2 * (half_head * 3 // 8), half_head * 3 // 8, half_head * 3 // 8]
    init_std = sizes.init_std_per_mille / 1000
    text = dict(
        initializer_range=init_std, vocab_size=VOCAB_SIZE, hidden_size=sizes.hidden_size, intermediate_size=4 * sizes.hidden_size,
        num_hidden_layers=sizes.num_layers, num_attention_heads=sizes.num_heads,
        num_key_value_heads=sizes.num_kv_heads, max_position_embeddings=sizes.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
        bos_token_id=ENDOFTEXT_ID, eos_token_id=IM_END_ID, tie_word_embeddings=True,
    )
    vision = dict(
        initializer_range=init_std, depth=sizes.vision_layers, hidden_size=sizes.vision_hidden_size, intermediate_size=2 * sizes.vision_hidden_size,
        num_heads=sizes.vision_heads, out_hidden_size=sizes.hidden_size, patch_size=14, spatial_merge_size=2,
        temporal_patch_size=2, window_size=56, fullatt_block_indexes=[sizes.vision_layers - 1],
    )
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN_ID, video_token_id=VIDEO_TOKEN_ID,
        vision_start_token_id=VISION_START_ID, vision_end_token_id=VISION_END_ID, tie_word_embeddings=True,
        initializer_range=init_std, architectures=["Qwen2_5_VLForConditionalGeneration"],
    )


def write_tiny_vlm(
    output_dir: Union[str, Path], family: str = "qwen2_5_vl", seed: int = 0, sizes: TinyVLMSizes = TinyVLMSizes(),
    vocab_file: Optional[Union[str, Path]] = None, overwrite: bool = False,
) -> Path:
    """Write the tiny checkpoint folder; refuses a folder holding a config.json or weights unless overwrite."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    output_dir = Path(output_dir)
    existing = [p.name for p in output_dir.glob("*") if p.name == "config.json" or p.suffix == ".safetensors"]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds {sorted(existing)}; pass --overwrite to replace them")
    config = tiny_qwen2_5_vl_config(sizes)
    tokenizer = qwen2_tokenizer(vocab_file or find_vocab_file())
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.update(bos_token_id=ENDOFTEXT_ID, eos_token_id=[IM_END_ID, ENDOFTEXT_ID],
                                   pad_token_id=ENDOFTEXT_ID)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(output_dir)  # stored as bfloat16 like the released weights
    tokenizer.save(str(output_dir / "tokenizer.json"))
    _write_json(output_dir / "tokenizer_config.json", tokenizer_config(sizes))
    _write_json(output_dir / "preprocessor_config.json",
                {"min_pixels": sizes.min_pixels, "max_pixels": sizes.max_pixels, **IMAGE_PROCESSOR_SETTINGS})
    _write_json(output_dir / "chat_template.json", {"chat_template": QWEN2_5_VL_CHAT_TEMPLATE})
    return output_dir


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m mmrole.tiny --family qwen2_5_vl",
        description="Write a tiny random checkpoint of a current vision-language family (transformers' own model "
                    "classes, the real Qwen vocabulary converted to a tokenizer.json, the family's image processor "
                    "settings and a chat template), for the transformers backend and the TRL recipe. Same seed and "
                    "sizes give identical weights.")
    parser.add_argument("--family", choices=FAMILIES, required=True, help="model family")
    parser.add_argument("--output_dir", required=True, help="folder to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    defaults = TinyVLMSizes()
    for size in fields(TinyVLMSizes):
        parser.add_argument(f"--{size.name}", type=int, default=getattr(defaults, size.name),
                            help=f"{size.name} (default {getattr(defaults, size.name)})")
    parser.add_argument("--vocab_file", default=None,
                        help="qwen.tiktoken to convert (default: model_weights/Qwen-VL-Chat, else the dashscope package)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in output_dir")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = TinyVLMSizes(**{size.name: getattr(args, size.name) for size in fields(TinyVLMSizes)})
    return write_as_command(
        lambda: write_tiny_vlm(args.output_dir, args.family, args.seed, sizes, args.vocab_file, args.overwrite),
        f"a tiny {args.family} checkpoint (seed {args.seed}, {sizes})")


if __name__ == "__main__":
    sys.exit(main())
