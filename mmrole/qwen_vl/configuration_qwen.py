"""Configuration of Qwen-VL-Chat (`model_type: "qwen"`), readable from the official config.json."""

from __future__ import annotations

from typing import Any, Dict, Optional

from transformers import PretrainedConfig

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


class QWenConfig(PretrainedConfig):
    """Defaults are the released Qwen-VL-Chat's; the official config.json loads unchanged.

    Keys the original remote code read and that we keep for round-tripping: `fp32`/`bf16`/`fp16`
    (the original's dtype switches; we use `torch_dtype` / `dtype` at load time instead),
    `use_flash_attn` (we always use torch SDPA) and `onnx_safe` (unused).
    """

    model_type = "qwen"
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
