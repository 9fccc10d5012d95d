"""Configuration of Qwen-VL-Chat (`model_type: "qwen"`), readable from the official config.json.

Also the local-only loading rule shared by the config, the model and the tokenizer: checkpoints load from
local folders, never from a hub (a missing folder is an error, not a download).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

from transformers import AutoConfig, PretrainedConfig

CONFIG_FILE = "config.json"
MODEL_TYPE = "qwen"

# The vision tower of the released Qwen-VL-Chat (a ViT-bigG/14 at 448 px).
DEFAULT_VISUAL_CONFIG: Dict[str, Any] = {
    "heads": 16,
    "image_size": 448,
    "image_start_id": 151857,
    "layers": 48,
    "mlp_ratio": 4.9231,
    "output_dim": 4096,
    "patch_size": 14,
    "width": 1664,
}


def local_folder(path: Union[str, os.PathLike], subfolder: Optional[str] = None, caller: str = "") -> Path:
    """`path` (joined with `subfolder`) as an existing local folder; raises FileNotFoundError otherwise.

    transformers would treat a missing folder as a hub id and send requests (with retries); we refuse instead."""
    folder = Path(path) / subfolder if subfolder else Path(path)
    if not folder.is_dir():
        prefix = f"{caller}: " if caller else ""
        raise FileNotFoundError(f"{prefix}{str(folder)!r} is not a local folder (hub downloads are not used)")
    return folder


def local_only(path: Optional[Union[str, os.PathLike]], kwargs: Dict[str, Any], caller: str) -> Optional[Path]:
    """The start of every from_pretrained here: `path` must be a local folder (None: nothing to check), and
    transformers' loading is told to stay local and never run code shipped with a checkpoint (kwargs edited)."""
    kwargs["local_files_only"] = True
    kwargs.pop("trust_remote_code", None)
    return None if path is None else local_folder(path, kwargs.get("subfolder"), caller)


def check_qwen_config_file(folder: Union[str, os.PathLike]) -> Path:
    """Raise a clear error naming `folder`/config.json unless it exists and has model_type "qwen"."""
    config_path = Path(folder) / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} does not exist: {folder} is not a model folder")
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{config_path} is not readable JSON: {err}") from err
    if model_type != MODEL_TYPE:
        raise ValueError(f"{config_path} has model_type {model_type!r}; a Qwen-VL-Chat checkpoint has {MODEL_TYPE!r}")
    return Path(folder)


class QWenConfig(PretrainedConfig):
    """Defaults are the released Qwen-VL-Chat's; the official config.json loads unchanged.

    Keys the original remote code read and that we keep for round-tripping: `fp32`/`bf16`/`fp16`
    (the original's dtype switches; we use `torch_dtype` / `dtype` at load time instead),
    `use_flash_attn` (we always use torch SDPA) and `onnx_safe` (unused).

    A downloaded folder's `auto_map` (pointing at the original's .py files) is dropped on load: this
    implementation replaces that code, and a saved folder must not name .py files it does not hold.
    """

    model_type = MODEL_TYPE
    # AutoTokenizer falls back to this when a folder has no tokenizer_config.json.
    tokenizer_class = "QWenTokenizer"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size: int = 151936,
        hidden_size: int = 4096,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        emb_dropout_prob: float = 0.0,
        attn_dropout_prob: float = 0.0,
        layer_norm_epsilon: float = 1e-6,
        initializer_range: float = 0.02,
        max_position_embeddings: int = 8192,
        scale_attn_weights: bool = True,
        use_cache: bool = True,
        bf16: bool = False,
        fp16: bool = False,
        fp32: bool = False,
        kv_channels: int = 128,
        rotary_pct: float = 1.0,
        rotary_emb_base: float = 10000,
        use_dynamic_ntk: bool = True,
        use_logn_attn: bool = True,
        use_flash_attn: Any = "auto",
        intermediate_size: int = 22016,
        no_bias: bool = True,
        tie_word_embeddings: bool = False,
        seq_length: int = 2048,
        visual: Optional[Dict[str, Any]] = None,
        onnx_safe: Any = None,
        **kwargs: Any,
    ):
        kwargs.pop("auto_map", None)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.emb_dropout_prob = emb_dropout_prob
        self.attn_dropout_prob = attn_dropout_prob
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.scale_attn_weights = scale_attn_weights
        self.use_cache = use_cache
        self.max_position_embeddings = max_position_embeddings
        self.bf16 = bf16
        self.fp16 = fp16
        self.fp32 = fp32
        self.kv_channels = kv_channels
        self.rotary_pct = rotary_pct
        self.rotary_emb_base = rotary_emb_base
        self.use_dynamic_ntk = use_dynamic_ntk
        self.use_logn_attn = use_logn_attn
        self.use_flash_attn = use_flash_attn
        self.no_bias = no_bias
        self.seq_length = seq_length
        self.onnx_safe = onnx_safe
        self.visual = {**DEFAULT_VISUAL_CONFIG, **(visual or {})}
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs: Any):
        """Read config.json from a local Qwen-VL-Chat folder: never a hub, never downloaded code; a config of
        another model type is an error naming the file (transformers would only warn)."""
        check_qwen_config_file(local_only(pretrained_model_name_or_path, kwargs, f"{cls.__name__}.from_pretrained"))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def to_diff_dict(self) -> Dict[str, Any]:
        """What save_pretrained writes. Besides `dtype`, also `torch_dtype`: the name transformers 4.x reads,
        which the original Qwen-VL code targets (4.32); transformers 5 reads `dtype` and accepts both.
        (Not added in to_dict: transformers 5 would then read the deprecated attribute and warn.)"""
        output = super().to_diff_dict()
        if output.get("dtype") is not None:
            output["torch_dtype"] = output["dtype"]
        return output


# Registered where it is defined: importing this module makes AutoConfig.from_pretrained read a Qwen-VL-Chat folder's
# config.json (model_type "qwen") as a QWenConfig.
AutoConfig.register(QWenConfig.model_type, QWenConfig, exist_ok=True)
