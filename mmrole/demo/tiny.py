"""Write a tiny random Qwen-VL-Chat-format checkpoint with the real Qwen vocabulary, for tests and the demo.

    python -m mmrole.tiny --output_dir DIR [--seed N] [--hidden_size 128 --num_layers 2 ...]

The folder looks like a released Qwen-VL-Chat download (config.json of model_type "qwen", the real
generation_config.json, tokenizer_config.json, qwen.tiktoken, bfloat16 safetensors with the original
parameter names), so every script loads it like the real model. The vocabulary file comes from
model_weights/Qwen-VL-Chat when present, else from the installed PyPI package dashscope; nothing is
downloaded. The same seed and sizes give byte-identical weights.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from ..common.cli import EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser

REPO_ROOT = Path(__file__).resolve().parent.parent
VOCAB_FILE = "qwen.tiktoken"
VOCAB_SIZE = 151936
# Ids from here up to VOCAB_SIZE are padding rows the tokenizer cannot decode.
TOKENIZER_LENGTH = 151860
# qwen.tiktoken holds the BPE ranks 0..151642; the special tokens take the ids after them.
QWEN_BPE_RANKS = 151643
IMAGE_START_ID = 151857

# The released Qwen-VL-Chat generation_config.json (minus its transformers_version).
QWEN_VL_CHAT_GENERATION_CONFIG = {
    "chat_format": "chatml",
    "do_sample": True,
    "eos_token_id": 151643,
    "max_new_tokens": 512,
    "max_window_size": 6144,
    "pad_token_id": 151643,
    "top_k": 0,
    "top_p": 0.3,
}
QWEN_VL_CHAT_TOKENIZER_CONFIG = {"model_max_length": 8192, "tokenizer_class": "QWenTokenizer"}


@dataclass(frozen=True)
class TinySizes:
    """Sizes of the tiny model. The defaults mirror the tiny reference checkpoint of the original code."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 56
    seq_length: int = 300

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size must be a multiple of 4 (resampler sin-cos table), got {self.hidden_size}")
        if self.vision_width % self.vision_heads:
            raise ValueError(f"vision_width {self.vision_width} is not divisible by vision_heads {self.vision_heads}")
        if self.image_size % 14:
            raise ValueError(f"image_size must be a multiple of the patch size 14, got {self.image_size}")
        if min(asdict(self).values()) < 1:
            raise ValueError(f"all sizes must be positive: {self}")


def check_vocab_file(path: Union[str, Path]) -> Path:
    """`path` if it is Qwen's vocabulary (one `base64 rank` line per BPE token, ranks 0..151642), else a
    ValueError naming the file: a truncated or foreign file would give a tokenizer with the wrong ids."""
    from mmrole.qwen_vl.tokenization_qwen import load_tiktoken_ranks

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {path}")
    ranks = load_tiktoken_ranks(path)  # names the file and line of a malformed line
    if sorted(ranks.values()) != list(range(QWEN_BPE_RANKS)):
        raise ValueError(
            f"{path} is not the Qwen vocabulary: it holds {len(ranks)} distinct tokens, expected {QWEN_BPE_RANKS} "
            f"with ranks 0..{QWEN_BPE_RANKS - 1}"
        )
    return path


def find_vocab_file(repo_root: Path = REPO_ROOT) -> Path:
    """qwen.tiktoken from model_weights/Qwen-VL-Chat if present, else from the installed dashscope package;
    checked with check_vocab_file (a broken download is reported, not skipped)."""
    local = repo_root / "model_weights" / "Qwen-VL-Chat" / VOCAB_FILE
    if local.is_file():
        return check_vocab_file(local)
    spec = importlib.util.find_spec("dashscope")  # locates the package without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "resources" / VOCAB_FILE
        if candidate.is_file():
            return check_vocab_file(candidate)
    raise FileNotFoundError(
        f"no {VOCAB_FILE} found: put Qwen-VL-Chat in {local.parent} or `pip install dashscope` "
        "(it ships dashscope/resources/qwen.tiktoken)"
    )


def tiny_config(sizes: TinySizes = TinySizes()):
    """A QWenConfig of the Qwen-VL-Chat layout at the given sizes (real vocabulary and special ids)."""
    from mmrole.qwen_vl.configuration_qwen import QWenConfig

    sizes.validate()
    return QWenConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=sizes.hidden_size,
        num_hidden_layers=sizes.num_layers,
        num_attention_heads=sizes.num_heads,
        kv_channels=sizes.hidden_size // sizes.num_heads,
        intermediate_size=2 * sizes.hidden_size,
        seq_length=sizes.seq_length,
        use_flash_attn=False,
        visual={
            "heads": sizes.vision_heads,
            "image_size": sizes.image_size,
            "image_start_id": IMAGE_START_ID,
            "layers": sizes.vision_layers,
            "mlp_ratio": 4.9231,
            "output_dim": sizes.hidden_size,
            "patch_size": 14,
            "width": sizes.vision_width,
        },
        architectures=["QWenLMHeadModel"],
    )


def build_tiny_model(sizes: TinySizes = TinySizes(), seed: int = 0):
    """A randomly initialised QWenLMHeadModel (float32). Weights are normal(0, 0.02) as the original's init;
    the lm_head rows of the undecodable padding ids are zero so they are never generated."""
    from mmrole.qwen_vl.modeling_qwen import QWenLMHeadModel

    config = tiny_config(sizes)
    torch.manual_seed(seed)
    model = QWenLMHeadModel(config)
    with torch.no_grad():
        model.lm_head.weight[TOKENIZER_LENGTH:] = 0
    return model


def write_tiny_checkpoint(
    output_dir: Union[str, Path],
    seed: int = 0,
    sizes: TinySizes = TinySizes(),
    vocab_file: Optional[Union[str, Path]] = None,
    overwrite: bool = False,
) -> Path:
    """Write the tiny checkpoint folder and return its path.

    Refuses to write into a folder that already holds a config.json or weights unless overwrite=True, so a
    real checkpoint is never clobbered by mistake."""
    from transformers import GenerationConfig

    output_dir = Path(output_dir)
    existing = [p.name for p in output_dir.glob("*") if p.name == "config.json" or p.suffix == ".safetensors"]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds {sorted(existing)}; pass --overwrite to replace them")
    vocab = check_vocab_file(vocab_file) if vocab_file else find_vocab_file()

    model = build_tiny_model(sizes, seed)
    model.generation_config = GenerationConfig(**QWEN_VL_CHAT_GENERATION_CONFIG)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Stored as bfloat16 like the released weights; loading in float32 is exact.
    model.to(torch.bfloat16).save_pretrained(output_dir)
    (output_dir / "generation_config.json").write_text(json.dumps(QWEN_VL_CHAT_GENERATION_CONFIG, indent=2) + "\n")
    (output_dir / "tokenizer_config.json").write_text(json.dumps(QWEN_VL_CHAT_TOKENIZER_CONFIG, indent=2) + "\n")
    if vocab.resolve() != (output_dir / VOCAB_FILE).resolve():
        shutil.copyfile(vocab, output_dir / VOCAB_FILE)
    return output_dir


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m mmrole.tiny",
        description="Write a tiny random Qwen-VL-Chat-format checkpoint (real vocabulary, random weights) "
        "for tests and the demo. Same seed and sizes give identical weights.",
    )
    parser.add_argument("--family", choices=("qwen_vl",), default="qwen_vl", metavar="{qwen_vl,qwen2_5_vl}",
                        help="qwen_vl (default): Qwen-VL-Chat. `--family qwen2_5_vl` writes a tiny Qwen2.5-VL instead "
                             "(its flags: python -m mmrole.tiny --family qwen2_5_vl --help)")
    parser.add_argument("--output_dir", required=True, help="folder to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    defaults = TinySizes()
    for field in fields(TinySizes):
        parser.add_argument(
            f"--{field.name}", type=int, default=getattr(defaults, field.name),
            help=f"model size: {field.name} (default {getattr(defaults, field.name)})",
        )
    parser.add_argument("--vocab_file", default=None,
                        help="qwen.tiktoken to copy (default: model_weights/Qwen-VL-Chat, else the dashscope package)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in output_dir")
    return parser


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = TinySizes(**{f.name: getattr(args, f.name) for f in fields(TinySizes)})
    return write_as_command(
        lambda: write_tiny_checkpoint(args.output_dir, args.seed, sizes, args.vocab_file, args.overwrite),
        f"a tiny Qwen-VL-Chat checkpoint (seed {args.seed}, {sizes})")


def write_as_command(write: Callable[[], Path], what: str) -> int:
    """Run a checkpoint writer for a command line (both families' `main`): one line and an exit status on failure."""
    try:
        folder = write()
    except (ValueError, FileExistsError) as err:  # sizes that cannot work, or --overwrite needed (usage: 2)
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # no vocabulary file, a write that failed
        print(f"error: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    print(f"wrote {what} to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
