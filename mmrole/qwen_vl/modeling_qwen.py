"""Qwen-VL-Chat language model with its vision tower, on current transformers (torch SDPA attention).

Parameter names are the released checkpoints' (`transformer.wte`, `transformer.h.N.*`, `transformer.ln_f`,
`transformer.visual.*`, `lm_head`), so Qwen-VL-Chat, MMRole-Agent and MMRole-Eval_RM load unchanged.

Length-dependent behaviour, as the original (all of it only in eval mode; training uses neither):
- dynamic NTK: at the prefill step the rotary base is scaled by alpha = max(2^ceil(log2(L/seq_length)+1) - 1, 1),
  where L is the sequence length; cached decoding keeps the prefill's alpha, which travels explicitly: every
  forward returns the alphas it used (`ntk_alpha`) and a cached step takes them back as its `ntk_alpha` argument
  (`generate` carries them between steps like the attention mask, see `_update_model_kwargs_for_generation`);
- log-n: the query at 0-based position p is multiplied by log(p+1)/log(seq_length) when p+1 > seq_length.
Without `position_ids` every row uses positions past..past+T-1 and L is the full (padded) length, exactly like
the original. With `position_ids` (what `generate` passes for a left-padded batch) positions, L and log-n are
taken per row, so each row of a batch behaves as if it were alone (see `batch_chat`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_qwen import QWenConfig, local_only
from .generation import chat as chat_api
from .image_processing_qwen import find_image_spans, preprocess_images, span_image_path
from .modeling_qwen_visual import Resampler, VisionTransformer, sincos_2d_table

# transformers 5.24 renamed the key-value cache from `past_key_values` to `cache`, in forward keywords (generate
# passes `cache=`) and in output fields; older 5.x releases use `past_key_values`. Both names are accepted as input,
# and outputs carry the cache under the installed release's name.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _one_cache(past_key_values: Optional[Cache], cache: Optional[Cache]) -> Optional[Cache]:
    if past_key_values is not None and cache is not None:
        raise ValueError("pass the key-value cache as `cache` or as `past_key_values`, not both")
    return cache if cache is not None else past_key_values


def dynamic_ntk_alpha(length: int, seq_length: int) -> int:
    """The original's dynamic-NTK factor for a sequence of `length` tokens (1 up to seq_length)."""
    context_value = math.log(length / seq_length, 2) + 1
    return max(2 ** math.ceil(context_value) - 1, 1)


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 and cast back, then scaled (as the original)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class RotaryEmbedding(nn.Module):
    """Rotary position tables with a per-row NTK alpha. Holds no parameters (nothing in the checkpoints)."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.dim = dim
        self.base = base
        self._inv_freq: Dict[Tuple[float, torch.device], torch.Tensor] = {}

    def inv_freq(self, ntk_alpha: float, device: torch.device) -> torch.Tensor:
        """[dim/2] float32 inverse frequencies for one alpha (cached)."""
        key = (float(ntk_alpha), device)
        if key not in self._inv_freq:
            base = self.base * ntk_alpha ** (self.dim / (self.dim - 2))
            exponents = torch.arange(0, self.dim, 2, device=device).float() / self.dim
            self._inv_freq[key] = 1.0 / (base**exponents)
        return self._inv_freq[key]

    def forward(self, positions: torch.Tensor, ntk_alphas: Sequence[float]) -> Tuple[torch.Tensor, torch.Tensor]:
        """positions: [B, T] ints, ntk_alphas: B values -> (cos, sin), each [B, 1, T, dim] float32."""
        inv_freq = torch.stack([self.inv_freq(alpha, positions.device) for alpha in ntk_alphas])
        freqs = positions.float()[:, :, None] * inv_freq[:, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]
        return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """t: [B, H, T, D]; cos/sin: [B, 1, T, R] with R <= D (only the first R channels rotate). Computed in float32."""
    rot_dim = cos.shape[-1]
    rotated, passed = t[..., :rot_dim].float(), t[..., rot_dim:].float()
    rotated = rotated * cos + _rotate_half(rotated) * sin
    return torch.cat((rotated, passed), dim=-1).type_as(t)


def logn_scale(positions: torch.Tensor, seq_length: int) -> Optional[torch.Tensor]:
    """[B, 1, T, 1] query factors log(p+1)/log(seq_length) for p+1 > seq_length (else 1); None if all are 1."""
    if int(positions.max()) + 1 <= seq_length:
        return None
    lengths = positions.double() + 1
    factor = torch.where(lengths > seq_length, torch.log(lengths) / math.log(seq_length), torch.ones_like(lengths))
    return factor.float()[:, None, :, None]


@dataclass
class AttentionInputs:
    """Everything a block needs besides its hidden states, shared by all layers of one forward.

    cos/sin: [B, 1, T, R] rotary tables; logn: [B, 1, T, 1] query factors or None; mask: [B, 1, T, K] bool
    (True = may attend) or None; is_causal: use SDPA's own causal mask (no padding, no cache offset).
    """

    cos: torch.Tensor
    sin: torch.Tensor
    logn: Optional[torch.Tensor]
    mask: Optional[torch.Tensor]
    is_causal: bool

    def to(self, device: torch.device) -> "AttentionInputs":
        """A copy on `device` (blocks of a model spread with device_map may live on other devices)."""
        if self.cos.device == device:
            return self
        move = lambda t: t.to(device) if t is not None else None  # noqa: E731
        return AttentionInputs(move(self.cos), move(self.sin), move(self.logn), move(self.mask), self.is_causal)


class QWenAttention(nn.Module):
    def __init__(self, config: QWenConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.kv_channels
        projection = config.kv_channels * config.num_attention_heads
        if projection != config.hidden_size:
            raise ValueError(
                f"kv_channels * num_attention_heads ({projection}) must equal hidden_size ({config.hidden_size})"
            )
        self.c_attn = nn.Linear(config.hidden_size, 3 * projection)
        self.c_proj = nn.Linear(projection, config.hidden_size, bias=not config.no_bias)
        self.dropout = config.attn_dropout_prob

    def forward(
        self,
        hidden_states: torch.Tensor,
        attn: AttentionInputs,
        past_key_values: Optional[Cache] = None,
        output_attentions: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """hidden_states: [B, T, C] -> ([B, T, C], attention weights [B, H, T, K] if asked)."""
        batch, length, _ = hidden_states.shape
        query, key, value = (
            t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
            for t in self.c_attn(hidden_states).chunk(3, dim=-1)
        )
        query = apply_rotary(query, attn.cos, attn.sin)
        key = apply_rotary(key, attn.cos, attn.sin)
        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx)
        if attn.logn is not None:
            query = query * attn.logn.to(query.dtype)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if output_attentions:
            context, weights = _eager_attention(query, key, value, attn, dropout)
        else:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attn.mask, dropout_p=dropout, is_causal=attn.is_causal
            )
        context = context.transpose(1, 2).reshape(batch, length, -1)
        return self.c_proj(context), weights


def _eager_attention(query, key, value, attn: AttentionInputs, dropout: float):
    """Explicit softmax attention, only used when attention weights are requested."""
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.size(-1))
    mask = attn.mask
    if mask is None and attn.is_causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = F.dropout(scores.softmax(dim=-1), p=dropout)
    return weights @ value, weights


class QWenMLP(nn.Module):
    """Gated MLP: c_proj(w1(x) * silu(w2(x))); each of w1/w2 has intermediate_size // 2 outputs."""

    def __init__(self, config: QWenConfig):
        super().__init__()
        inner = config.intermediate_size // 2
        self.w1 = nn.Linear(config.hidden_size, inner, bias=not config.no_bias)
        self.w2 = nn.Linear(config.hidden_size, inner, bias=not config.no_bias)
        self.c_proj = nn.Linear(inner, config.hidden_size, bias=not config.no_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.w1(x) * F.silu(self.w2(x)))


class QWenBlock(GradientCheckpointingLayer):
    def __init__(self, config: QWenConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = QWenAttention(config, layer_idx)
        self.ln_2 = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = QWenMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attn: AttentionInputs,
        past_key_values: Optional[Cache] = None,
        output_attentions: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """hidden_states: [B, T, C] -> ([B, T, C], attention weights or None)."""
        attn = attn.to(hidden_states.device)
        attn_out, weights = self.attn(self.ln_1(hidden_states), attn, past_key_values, output_attentions)
        hidden_states = hidden_states + attn_out
        return hidden_states + self.mlp(self.ln_2(hidden_states)), weights


@dataclass
class QWenModelOutput(BaseModelOutputWithPast):
    """`ntk_alpha`: [B] the dynamic-NTK factor each row used."""

    ntk_alpha: Optional[torch.Tensor] = None


@dataclass
class QWenCausalLMOutput(CausalLMOutputWithPast):
    """`ntk_alpha`: [B] the dynamic-NTK factor each row used."""

    ntk_alpha: Optional[torch.Tensor] = None


class QWenPreTrainedModel(PreTrainedModel):
    config_class = QWenConfig
    config: QWenConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["QWenBlock", "VisualAttentionBlock", "Resampler"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_sdpa = True
    # Non-persistent state of the original code that some exported checkpoints still carry.
    _keys_to_ignore_on_load_unexpected = [r"attn\.masked_bias", r"rotary_emb\.inv_freq"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' loading, from a local folder only: a missing folder is an error, not a hub download,
        and no code shipped with a checkpoint runs (`trust_remote_code` is ignored)."""
        local_only(pretrained_model_name_or_path, kwargs, f"{cls.__name__}.from_pretrained")  # None: a state_dict
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) weights, zero biases, unit norms, as the original; the LM's output
        projections get std / sqrt(2 * layers); the vision tower's own parameters get the original's scales."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (RMSNorm, nn.LayerNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            init.normal_(module.in_proj_weight, mean=0.0, std=std)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, Resampler):
            init.normal_(module.query, mean=0.0, std=std)
            grid_side = int(math.sqrt(module.n_queries))
            init.copy_(module.pos_embed, sincos_2d_table(module.pos_embed.size(1), grid_side))
        elif isinstance(module, VisionTransformer):
            width = module.positional_embedding.size(1)
            init.normal_(module.positional_embedding, mean=0.0, std=width**-0.5)
            init.normal_(module.proj, mean=0.0, std=module.output_dim**-0.5)
        if isinstance(module, (QWenAttention, QWenMLP)):
            init.normal_(module.c_proj.weight, mean=0.0, std=std / math.sqrt(2 * self.config.num_hidden_layers))


class QWenModel(QWenPreTrainedModel):
    """Token embeddings (with image features written in), the decoder blocks and the final norm."""

    def __init__(self, config: QWenConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.drop = nn.Dropout(config.emb_dropout_prob)
        rotary_dim = config.kv_channels if config.rotary_pct == 1.0 else int(config.kv_channels * config.rotary_pct)
        self.rotary_emb = RotaryEmbedding(rotary_dim, base=config.rotary_emb_base)
        self.h = nn.ModuleList(QWenBlock(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.visual = VisionTransformer(**config.visual)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Cache] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: Optional[bool] = None,
        cache: Optional[Cache] = None,
        image_features: Optional[Dict[str, torch.Tensor]] = None,
        ntk_alpha: Optional[Union[Sequence[float], torch.Tensor]] = None,
    ) -> Union[QWenModelOutput, tuple]:
        """input_ids: [B, T]; attention_mask: [B, past+T] 0/1; position_ids: [B, T] (optional, see module doc);
        pixel_values: [n_images, 3, S, S] for the image spans of input_ids in order of appearance (optional:
        without it the images are loaded from the paths written in the spans, as the original).
        image_features: {name: [n_queries, C]} for every name written in the image spans (from
        `encode_image_paths`, or from pixels the caller loaded itself): the spans take these features, and a span
        whose name is missing is an error. With pixel_values or image_features nothing is loaded from a path
        written in input_ids; only a call with neither opens those paths (the original's behaviour).
        `cache` is `past_key_values` under transformers' newer name (CACHE_FIELD).
        ntk_alpha: [B] the dynamic-NTK factors to use. Decoding on a cache: pass on the prefill output's
        `ntk_alpha` (as `generate`, `chat`, `batch_chat` and continuous batching do) to keep the prefill's factor,
        as the original did; without it a cached step uses the factor of the whole sequence. A prompt prefilled
        in pieces (continuous batching reuses a shared prefix's keys) passes its full length's factor to every
        piece; without it a prefill takes each row's factor from its own length (max position + 1).
        Returns last_hidden_state [B, T, C], the cache, hidden_states, attentions, ntk_alpha [B]."""
        past_key_values = _one_cache(past_key_values, cache)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0

        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        batch, length = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        positions = _positions(position_ids, batch, length, past_length, device)
        alphas = self._ntk_alphas(positions, past_length, ntk_alpha)
        cos, sin = self.rotary_emb(positions, alphas)
        use_logn = self.config.use_logn_attn and not self.training
        mask, is_causal = _attention_mask(attention_mask, batch, length, past_length, device)
        attn = AttentionInputs(
            cos=cos,
            sin=sin,
            logn=logn_scale(positions, self.config.seq_length) if use_logn else None,
            mask=mask,
            is_causal=is_causal,
        )

        hidden_states = self.drop(inputs_embeds)
        if past_length == 0 and input_ids is not None:
            hidden_states = self._write_image_features(input_ids, hidden_states, pixel_values, image_features)
        elif pixel_values is not None and past_length == 0:
            raise ValueError("pixel_values were given without input_ids holding their <img> spans")

        all_hidden: List[torch.Tensor] = []
        all_attn: List[torch.Tensor] = []
        for block in self.h:
            if output_hidden_states:
                all_hidden.append(hidden_states)
            hidden_states, weights = block(
                hidden_states, attn=attn, past_key_values=past_key_values, output_attentions=output_attentions
            )
            if output_attentions:
                all_attn.append(weights)
        hidden_states = self.ln_f(hidden_states)
        if output_hidden_states:
            all_hidden.append(hidden_states)

        output = QWenModelOutput(
            last_hidden_state=hidden_states,
            **{CACHE_FIELD: past_key_values if use_cache else None},
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attn) if output_attentions else None,
            ntk_alpha=torch.tensor(alphas, dtype=torch.float32),
        )
        return output if return_dict is not False else output.to_tuple()

    def encode_image_paths(self, paths: Sequence[str]) -> torch.Tensor:
        """[len(paths), n_queries, C] features of the images at `paths` (relative to the working directory),
        encoded in one vision forward, as a forward does for the distinct images of its prompts."""
        return self.visual(load_image_pixels(paths, self.visual.image_size))

    def _write_image_features(
        self,
        input_ids: torch.Tensor,
        hidden_states: torch.Tensor,
        pixel_values: Optional[torch.Tensor],
        image_features: Optional[Dict[str, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Replace the 256 positions inside every <img>...</img> span by that image's features.

        Each distinct image is encoded once per forward (a path seen twice, or equal pixels under the same
        path). In training without images a zero-weighted dummy image keeps the vision tower in the graph, as
        the original did, so distributed training sees gradients for every parameter.
        """
        visual_cfg = self.config.visual
        spans = find_image_spans(input_ids, visual_cfg["image_start_id"], self.visual.n_queries)
        if not spans:
            if pixel_values is not None:
                raise ValueError(f"pixel_values holds {len(pixel_values)} images but input_ids has no <img> span")
            if self.training and torch.is_grad_enabled():
                side = 2 * self.visual.patch_size
                dummy = self.visual(hidden_states.new_zeros(1, 3, side, side))
                hidden_states = hidden_states + dummy.mean().to(hidden_states.dtype) * 0
            return hidden_states
        paths = [span_image_path(input_ids[row, start + 1 : end].tolist(), visual_cfg["image_start_id"] + 2)
                 for row, start, end in spans]
        if pixel_values is None:
            distinct = list(dict.fromkeys(paths))
            if image_features is None:  # the original: load the images named in the prompt
                image_features = dict(zip(distinct, self.encode_image_paths(distinct)))
            missing = [path for path in distinct if path not in image_features]
            if missing:
                raise ValueError(f"image_features has no features for the image span(s) {missing[:3]}")
            span_features = [image_features[path] for path in paths]
        else:
            if image_features is not None:
                raise ValueError("pass pixel_values or image_features, not both")
            if len(pixel_values) != len(spans):
                raise ValueError(
                    f"pixel_values holds {len(pixel_values)} images but input_ids has {len(spans)} <img> spans"
                )
            pixels, image_index = _dedupe_pixels(pixel_values, paths)
            encoded = self.visual(pixels)
            span_features = [encoded[index] for index in image_index]
        hidden_states = hidden_states.clone()
        for (row, start, end), features in zip(spans, span_features):
            hidden_states[row, start + 1 : end] = features.to(device=hidden_states.device, dtype=hidden_states.dtype)
        return hidden_states

    def ntk_alpha_for_length(self, length: int) -> float:
        """The dynamic-NTK factor the original gives every position of a `length`-token prompt prefilled alone
        (1 in training or without dynamic NTK)."""
        if self.training or not self.config.use_dynamic_ntk:
            return 1
        return dynamic_ntk_alpha(length, self.config.seq_length)

    def _ntk_alphas(self, positions: torch.Tensor, past_length: int,
                    given: Optional[Union[Sequence[float], torch.Tensor]]) -> List[float]:
        """One NTK alpha per row: the alphas the caller gives (`ntk_alpha`: the prefill output's, passed on when
        decoding; or, for a prompt prefilled in pieces, the factor of its full length); else at prefill from
        the row's own length and on a cache from the whole sequence's."""
        batch = positions.size(0)
        if self.training or not self.config.use_dynamic_ntk:
            return [1] * batch
        if given is not None:
            alphas = given.tolist() if isinstance(given, torch.Tensor) else list(given)
            if len(alphas) != batch:
                raise ValueError(f"ntk_alpha holds {len(alphas)} values for a batch of {batch} rows")
            return alphas
        lengths = (positions.max(dim=1).values + 1).tolist()
        return [self.ntk_alpha_for_length(n) for n in lengths]


def load_image_pixels(paths: Sequence[str], image_size: int) -> torch.Tensor:
    """[N, 3, S, S] CLIP-normalised pixels of the images at `paths` (the tokenizer area's preprocessing)."""
    return preprocess_images(paths, image_size)


def _dedupe_pixels(pixel_values: torch.Tensor, paths: Sequence[str]) -> Tuple[torch.Tensor, List[int]]:
    """Keep one copy of images given twice (same path, equal pixels): (unique pixels, index per span)."""
    kept: List[int] = []
    index: List[int] = []
    for i, path in enumerate(paths):
        match = next(
            (k for k, j in enumerate(kept) if paths[j] == path and torch.equal(pixel_values[j], pixel_values[i])),
            None,
        )
        if match is None:
            kept.append(i)
            match = len(kept) - 1
        index.append(match)
    return pixel_values[kept], index


def _positions(
    position_ids: Optional[torch.Tensor], batch: int, length: int, past_length: int, device: torch.device
) -> torch.Tensor:
    """[B, T] rotary / log-n positions: the given ones, else past..past+T-1 for every row (the original)."""
    if position_ids is None:
        return torch.arange(past_length, past_length + length, device=device).expand(batch, length)
    position_ids = position_ids.to(device).view(-1, length)
    return position_ids.expand(batch, length) if position_ids.size(0) == 1 else position_ids


def _attention_mask(
    attention_mask: Optional[torch.Tensor], batch: int, length: int, past_length: int, device: torch.device
) -> Tuple[Optional[torch.Tensor], bool]:
    """Causal + padding mask for SDPA: ([B, 1, T, K] bool or None, is_causal).

    A padded query whose keys are all padding (left padding) attends causally to the padding instead, so no
    softmax row is empty (the original gives such rows uniform weights); those outputs are never used.
    """
    total = past_length + length
    padded = attention_mask is not None and not bool(attention_mask.all())
    if not padded:
        if length == 1:
            return None, False
        if past_length == 0:
            return None, True
    query_pos = torch.arange(past_length, total, device=device)[:, None]
    causal = torch.arange(total, device=device)[None, :] <= query_pos  # [T, K]
    if not padded:
        return causal[None, None], False
    if attention_mask.shape[-1] != total:
        raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} positions, expected {total}")
    mask = causal[None] & attention_mask.to(device=device, dtype=torch.bool)[:, None, :]  # [B, T, K]
    empty = ~mask.any(dim=-1, keepdim=True)
    mask = mask | (empty & causal[None])
    return mask[:, None], False


class QWenLMHeadModel(QWenPreTrainedModel, GenerationMixin):
    """Qwen-VL-Chat: `transformer` (QWenModel) and an untied `lm_head`; plus the chat API of the original."""

    # Keep the original loss semantics (mean over the micro-batch); the Trainer then scales for accumulation.
    accepts_loss_kwargs = False

    def __init__(self, config: QWenConfig):
        super().__init__(config)
        self.transformer = QWenModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Cache] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.LongTensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        head_mask: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: Optional[bool] = None,
        logits_to_keep: Union[int, torch.Tensor] = 0,
        cache: Optional[Cache] = None,
        image_features: Optional[Dict[str, torch.Tensor]] = None,
        ntk_alpha: Optional[Union[Sequence[float], torch.Tensor]] = None,
    ) -> Union[QWenCausalLMOutput, tuple]:
        """As QWenModel.forward, plus: labels [B, T] (-100 = ignored) gives the mean shifted cross-entropy;
        logits_to_keep (int k > 0: the last k positions) avoids full-vocabulary logits everywhere.
        `token_type_ids` and `head_mask` are accepted for the original's signature and ignored."""
        outputs = self.transformer(
            input_ids=input_ids,
            past_key_values=past_key_values,
            cache=cache,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            pixel_values=pixel_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            image_features=image_features,
            ntk_alpha=ntk_alpha,
        )
        hidden_states = outputs.last_hidden_state
        if labels is None and isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        elif labels is None and isinstance(logits_to_keep, torch.Tensor):
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.lm_head(hidden_states)
        loss = shifted_cross_entropy(logits, labels) if labels is not None else None
        output = QWenCausalLMOutput(
            loss=loss,
            logits=logits,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            ntk_alpha=outputs.ntk_alpha,
        )
        return output if return_dict is not False else output.to_tuple()


    def generate(self, inputs=None, generation_config=None, logits_processor=None, **kwargs):
        """transformers' `generate`, plus the original's `stop_words_ids` keyword (or generation_config field):
        after one of these id sequences the next token is forced to eos."""
        config = generation_config if generation_config is not None else self.generation_config
        stop_words_ids = kwargs.pop("stop_words_ids", None) or getattr(config, "stop_words_ids", None)
        eos_token_id = kwargs.get("eos_token_id", config.eos_token_id)
        logits_processor = chat_api.add_stop_words_processor(logits_processor, stop_words_ids, eos_token_id)
        return super().generate(
            inputs, generation_config=generation_config, logits_processor=logits_processor, **kwargs
        )

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs):
        """transformers' bookkeeping between decoding steps, plus the dynamic-NTK factors of the prefill: each step
        passes the alphas the previous one used (`ntk_alpha`) to the next, as the attention mask is passed on."""
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        if getattr(outputs, "ntk_alpha", None) is not None:
            model_kwargs["ntk_alpha"] = outputs.ntk_alpha
        return model_kwargs

    def chat(self, tokenizer, query, history=None, system="You are a helpful assistant.", **kwargs):
        """The original chat API; see mmrole.qwen_vl.generation.chat.chat."""
        return chat_api.chat(self, tokenizer, query, history=history, system=system, **kwargs)

    def chat_stream(self, tokenizer, query, history=None, system="You are a helpful assistant.", **kwargs):
        """Streaming chat (an iterator over the growing response); see mmrole.qwen_vl.generation.chat.chat_stream."""
        return chat_api.chat_stream(self, tokenizer, query, history=history, system=system, **kwargs)

    def batch_chat(self, tokenizer, queries, histories=None, systems="You are a helpful assistant.", **kwargs):
        """Many chats at once (list of responses); see mmrole.qwen_vl.generation.chat.batch_chat."""
        return chat_api.batch_chat(self, tokenizer, queries, histories=histories, systems=systems, **kwargs)

    def batch_chat_detailed(self, tokenizer, queries, histories=None, systems="You are a helpful assistant.", **kwargs):
        """Many chats at once with ids, finish reasons and token counts; see generation.chat.batch_chat_detailed."""
        return chat_api.batch_chat_detailed(self, tokenizer, queries, histories=histories, systems=systems, **kwargs)


def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of position t's logits against label t+1, over all labels != -100.

    logits: [B, T, V]; labels: [B, T]. Computed in float32 (the original used the logits' dtype)."""
    shift_logits = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    shift_labels = labels[:, 1:].to(logits.device).reshape(-1)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)


# Registered where they are defined: importing this module makes AutoModel / AutoModelForCausalLM.from_pretrained
# load a Qwen-VL-Chat-format folder with these classes (never with a folder's own downloaded code).
AutoModel.register(QWenConfig, QWenModel, exist_ok=True)
AutoModelForCausalLM.register(QWenConfig, QWenLMHeadModel, exist_ok=True)
