"""The vision tower of Qwen-VL-Chat: a ViT over 14x14 patches and a 256-query cross-attention resampler.

Parameter names follow the released checkpoints (`transformer.visual.*`), so their weights load unchanged:
`conv1`, `positional_embedding`, `ln_pre`, `transformer.resblocks.N.{ln_1,attn.in_proj,attn.out_proj,ln_2,
mlp.c_fc,mlp.c_proj}`, `attn_pool.{query,pos_embed,kv_proj,ln_q,ln_kv,attn}`, `ln_post`, `proj`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

# Every image becomes this many feature vectors (a 16x16 grid of resampler queries); the tokenizer reserves
# the same number of positions between <img> and </img>.
DEFAULT_N_QUERIES = 256
# The resampler uses one attention head per 128 channels, as the original.
RESAMPLER_HEAD_DIM = 128
VISUAL_LAYER_NORM_EPS = 1e-6


def resize_square_table(table: torch.Tensor, target_len: int) -> torch.Tensor:
    """Bicubically resize a square grid of position vectors.

    table: [side*side, C] -> [target_side*target_side, C] (returned unchanged when the sizes agree). The
    interpolation runs in float32 and the result gets the table's dtype back, like the original.
    """
    source_side = int(math.sqrt(table.size(0)))
    target_side = int(math.sqrt(target_len))
    if source_side == target_side:
        return table
    grid = table.float().reshape(1, source_side, source_side, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(target_side, target_side), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).flatten(0, 2).to(dtype=table.dtype)


def sincos_2d_table(embed_dim: int, grid_side: int) -> torch.Tensor:
    """The fixed 2-D sin-cos position table of the resampler's queries: [grid_side**2, embed_dim].

    Half of the channels encode the row, half the column; each half is [sin | cos] over geometric frequencies.
    Only used to initialise new models: released checkpoints store the table (bf16-rounded) and it is loaded.
    """
    if embed_dim % 4:
        raise ValueError(f"the resampler width must be a multiple of 4, got {embed_dim}")
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid_side, dtype=torch.float64)
    rows = coords.repeat_interleave(grid_side)  # position index = row * side + column
    cols = coords.repeat(grid_side)
    # The original puts the column encoding first (its meshgrid is x-major).

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


class VisualSelfAttention(nn.Module):
    """Multi-head self-attention of the ViT. `in_proj` packs q, k and v per head ([q_h | k_h | v_h] for each
    head h), which is the original layout and differs from torch's nn.MultiheadAttention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"vision width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = width // heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, L, width] -> [N, L, width] (bidirectional attention over the patches)."""
        n, length, _ = x.shape
        mixed = self.in_proj(x).view(n, length, self.heads, 3 * self.head_dim)
        query, key, value = (t.transpose(1, 2) for t in mixed.split(self.head_dim, dim=-1))
        context = F.scaled_dot_product_attention(query, key, value)
        return self.out_proj(context.transpose(1, 2).reshape(n, length, -1))


class VisualAttentionBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block of the ViT: attention and a GELU MLP, each with a residual."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        mlp_width = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width, eps=VISUAL_LAYER_NORM_EPS)
        self.attn = VisualSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=VISUAL_LAYER_NORM_EPS)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, mlp_width))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(mlp_width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, L, width] -> [N, L, width]."""
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class VisualTransformer(nn.Module):
    """The stack of ViT blocks (named `transformer.resblocks` in the checkpoints)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.ModuleList(VisualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class Resampler(nn.Module):
    """One cross-attention layer: n_queries learned queries attend over the ViT patches.

    Queries get the fixed sin-cos table `pos_embed`; keys get the same table resized to the patch grid.
    """

    def __init__(self, n_queries: int, embed_dim: int, kv_dim: int):
        super().__init__()
        grid_side = int(math.sqrt(n_queries))
        if grid_side * grid_side != n_queries:
            raise ValueError(f"the resampler needs a square number of queries, got {n_queries}")
        self.n_queries = n_queries
        # Kept as a frozen Parameter (not a buffer) like the original, so ZeRO-3 and device maps treat it alike.
        table = sincos_2d_table(embed_dim, grid_side).to(torch.get_default_dtype())  # the model's load dtype
        self.pos_embed = nn.Parameter(table, requires_grad=False)
        self.query = nn.Parameter(torch.zeros(n_queries, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, max(1, embed_dim // RESAMPLER_HEAD_DIM), batch_first=True)
        self.ln_q = nn.LayerNorm(embed_dim, eps=VISUAL_LAYER_NORM_EPS)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=VISUAL_LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, L, kv_dim] patch features -> [N, n_queries, embed_dim]."""
        pos_embed = self.pos_embed.to(x.dtype)
        key_pos = resize_square_table(pos_embed, x.size(1))
        x = self.ln_kv(self.kv_proj(x))
        queries = (self.ln_q(self.query) + pos_embed).unsqueeze(0).expand(x.size(0), -1, -1)
        out, _ = self.attn(queries, x + key_pos.unsqueeze(0), x, need_weights=False)
        return out


class VisionTransformer(nn.Module):
    """Pixels [N, 3, S, S] (CLIP-normalised) -> image features [N, n_queries, output_dim]."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float,
        output_dim: int,
        n_queries: int = DEFAULT_N_QUERIES,
        **_ignored: Any,  # e.g. image_start_id, which the language model reads from the same dict
    ):
        super().__init__()
        self.image_size = image_size
        self.patch_size = patch_size
        self.output_dim = output_dim
        self.n_queries = n_queries
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        # A 16x16 grid of learned positions (whatever the image size), resized to the patch grid on the fly.
        self.positional_embedding = nn.Parameter(torch.zeros(DEFAULT_N_QUERIES, width))
        self.ln_pre = nn.LayerNorm(width, eps=VISUAL_LAYER_NORM_EPS)
        self.transformer = VisualTransformer(width, layers, heads, mlp_ratio)
        self.attn_pool = Resampler(n_queries, output_dim, width)
        self.ln_post = nn.LayerNorm(output_dim, eps=VISUAL_LAYER_NORM_EPS)
        self.proj = nn.Parameter(torch.zeros(output_dim, output_dim))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values: [N, 3, S, S] -> [N, n_queries, output_dim]."""
        x = pixel_values.to(dtype=self.conv1.weight.dtype, device=self.conv1.weight.device)
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [N, grid*grid, width]
        x = x + resize_square_table(self.positional_embedding, x.size(1))
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(self.attn_pool(x))
        return x @ self.proj
