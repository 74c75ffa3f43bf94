"""Lina-Speech's building blocks: the mixing block (GLA or cached softmax + SwiGLU), BlindCrossAttention, text encoder.

Every block takes and returns its recurrent state, so one code path trains on whole sequences and generates
token by token: a GLA block's state is its [B, H, K, V] matrix, a softmax block's is its (keys, values) cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.gla import GatedLinearAttention
from common.attention.softmax import SoftmaxAttention, softmax_attention
from common.errors import check_choice
from common.layers.transformer_block import TransformerBlock

MIXERS = ("gla", "softmax")


def sinusoidal(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """positions [N] -> [N, dim]: sin of position * 10000^(-2i/dim) for the first half, cos for the second."""
    exponent = torch.arange(dim // 2, device=positions.device, dtype=torch.float32) * 2 / dim
    angle = positions.float()[:, None] * torch.pow(10000.0, -exponent)[None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


def rotary(x: torch.Tensor, offset: int | torch.Tensor = 0) -> torch.Tensor:
    """Rotary position embedding on the first half of the channels of x [B, H, N, D] at positions offset + n
    (the official code's RotaryEmbedding(head_dim // 2): a partial rotation, the rest passes through)."""
    rot = x.shape[-1] // 2 // 2 * 2
    positions = torch.arange(x.shape[-2], device=x.device) + offset
    freqs = positions.float()[:, None] * torch.pow(10000.0, -torch.arange(0, rot, 2, device=x.device) / rot)[None]
    cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
    x1, x2, rest = x[..., : rot // 2], x[..., rot // 2 : rot], x[..., rot:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, rest], dim=-1)


class SwiGLU(nn.Module):
    """The official channel mixer: silu(gate) * x through a hidden width of 4/3 * dim (so 8/3 * dim packed)."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = dim * 4 // 3
        self.p_in = nn.Linear(dim, 2 * hidden)
        self.p_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, x = self.p_in(x).chunk(2, dim=-1)
        return self.p_out(F.silu(gate) * x)


class CachedSoftmaxAttention(SoftmaxAttention):
    """The core's causal softmax attention with rotary positions and a key/value cache, for `arch=transformer`.

    The cache holds the rotated keys and values of every past token, so one step costs O(past) time and the
    cache O(past) memory: the cost the GLA state avoids. `softmax_attention`'s causal mask is bottom-right
    aligned, so new queries see the whole cache and the causal part of themselves.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias=False, causal=True, attn_drop=attn_drop)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x [B, N, C] -> ([B, N, C], (keys, values) [B, H, past + N, D])."""
        offset = 0 if cache is None else cache[0].shape[2]
        (q,) = self.split_heads(self.q(x), parts=1)
        k, v = self.split_heads(self.kv(x), parts=2)
        q, k = rotary(q, offset), rotary(k, offset)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        out = softmax_attention(q, k, v, causal=True, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).flatten(2))), (k, v)


class MixingBlock(nn.Module):
    """Pre-norm residual block: x + mixer(LN(x)), then x + SwiGLU(LN(x)) (the official MixingBlock).

    mixer "gla": the core's GatedLinearAttention with Lina's sizes (expand_k 1, expand_v 2, gate low rank 16,
    gate logit normaliser 16, RMSNorm-swish output gate); "softmax": `CachedSoftmaxAttention`. Dropout on
    both branches.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mixer: str = "gla",
        dropout: float = 0.0,
        expand_k: float = 1.0,
        expand_v: float = 2.0,
        chunk_size: int = 64,
    ):
        super().__init__()
        check_choice("arch", mixer, MIXERS)
        self.mixer_name = mixer
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        if mixer == "gla":
            self.mixer = GatedLinearAttention(
                dim, num_heads, expand_k=expand_k, expand_v=expand_v, gate_logit_normalizer=16.0, chunk_size=chunk_size
            )
        else:
            self.mixer = CachedSoftmaxAttention(dim, num_heads, attn_drop=dropout)
        self.ffn = SwiGLU(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, state=None, step: bool = False):
        """x [B, T, C] -> (x [B, T, C], state after the last token). `step`: GLA in recurrent mode."""
        if self.mixer_name == "gla":
            mixed, state = self.mixer(self.norm1(x), state=state, return_state=True, mode="recurrent" if step else None)
        else:
            mixed, state = self.mixer(self.norm1(x), cache=state)
        x = x + self.drop(mixed)
        return x + self.drop(self.ffn(self.norm2(x))), state


class BlindCrossAttention(nn.Module):
    """Position-aware cross-attention from audio steps to text tokens (Lina-Speech's `BlindCrossAttention`).

    Single head; q = LN(W_q y), k = LN(W_k text), v = LN(W_v text), rotary on q (at the audio step) and k.
    1. content attention: softmax(q k^T / sqrt(d)) reads the sinusoidal embeddings P of the text positions,
       i.e. an expected text position per audio step;
    2. that [T, pos_dim] signal runs through `pos_net`, a small causal mixing block with its own state, which
       can learn to move the alignment forward monotonically;
    3. position attention: softmax(pos_net(.) P^T / sqrt(pos_dim)) reads the text values v.
    Padded text tokens get no weight in either attention.
    """

    def __init__(self, q_dim: int, k_dim: int, att_dim: int, pos_net: MixingBlock, pos_dim: int, dropout=0.0):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(q_dim, att_dim), nn.Linear(k_dim, att_dim), nn.Linear(k_dim, att_dim)
        self.ln_q, self.ln_k, self.ln_v = nn.LayerNorm(att_dim), nn.LayerNorm(att_dim), nn.LayerNorm(att_dim)
        self.pos_net, self.pos_dim, self.dropout = pos_net, pos_dim, dropout

    def forward(
        self, y, memory, mask, state=None, time_step: int | torch.Tensor = 0, step: bool = False, weights=False
    ):
        """y [B, T, q_dim], memory [B, S, k_dim], mask [B, S] (True = text) -> ([B, T, att_dim], pos_net state),
        and with `weights` the content and the position attention [B, 2, T, S] (for `guided_attention_loss`)."""
        q = rotary(self.ln_q(self.q(y))[:, None], time_step)  # [B, 1, T, D]
        k = rotary(self.ln_k(self.k(memory))[:, None])
        v = self.ln_v(self.v(memory))[:, None]
        pos = sinusoidal(torch.arange(memory.shape[1], device=memory.device), self.pos_dim).to(y.dtype)
        pos = pos.expand(y.shape[0], 1, -1, -1)  # [B, 1, S, pos_dim]
        p = self.dropout if self.training else 0.0
        if not weights:
            expected_pos = softmax_attention(q, k, pos, mask=mask, dropout_p=p)[:, 0]  # [B, T, pos_dim]
            moved, state = self.pos_net(expected_pos, state, step)
            return softmax_attention(moved[:, None], pos, v, mask=mask, dropout_p=p)[:, 0], state
        # the same two attentions through the core's explicit path, their weights kept
        expected_pos, content = softmax_attention(q, k, pos, mask=mask, dropout_p=p, return_weights=True)
        moved, state = self.pos_net(expected_pos[:, 0], state, step)
        out, position = softmax_attention(moved[:, None], pos, v, mask=mask, dropout_p=p, return_weights=True)
        return out[:, 0], state, torch.cat([content, position], dim=1)


def guided_attention_loss(att: torch.Tensor, text_len: torch.Tensor, frames: torch.Tensor, sigma: float = 0.2):
    """Tachibana et al. 2018 (DC-TTS)'s guided attention: att [B, T, S] weighted by 1 - exp(-(s/S - t/T)^2 /
    2 sigma^2), summed over the S text tokens, averaged over the T frames of every utterance: the attention put
    far from the diagonal. ~0 for a diagonal alignment, ~0.6 for a uniform one (sigma 0.2). (DC-TTS averages
    over tokens too, which would make the weight depend on the text's length.)"""
    t = torch.arange(att.shape[1], device=att.device)[None, :, None] / frames[:, None, None].clamp_min(1)
    s = torch.arange(att.shape[2], device=att.device)[None, None, :] / text_len[:, None, None].clamp_min(1)
    penalty = 1 - torch.exp(-((s - t) ** 2) / (2 * sigma**2))
    return (att * penalty * (s < 1)).sum(-1)[(t < 1)[..., 0]].mean()


class TextEncoder(nn.Module):
    """Text token embeddings + sinusoidal positions -> pre-norm softmax transformer (the core's block) -> LN.

    Token 0 is padding: masked out of the attention and of every cross-attention that reads the output.
    """

    def __init__(self, vocab: int, dim: int, num_heads: int, depth: int, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, "softmax", attention_options={"proj_drop": dropout}) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.scale = math.sqrt(dim)

    def forward(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text [B, S] ids -> (memory [B, S, dim], mask [B, S] bool)."""
        mask = text != 0
        pos = sinusoidal(torch.arange(text.shape[1], device=text.device), self.embed.embedding_dim)
        x = self.drop(self.embed(text) * self.scale + pos.to(self.embed.weight.dtype))
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.norm(x), mask
