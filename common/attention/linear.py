"""Kernelised linear attention (Katharopoulos et al.): phi(q) (phi(k)^T v) / phi(q) sum phi(k).

The causal form has three implementations with the same result, picked by `mode=`:
"parallel" (the masked N x N map), "chunked" (exact within chunks, prefix sums between them) and
"recurrent" (a token-by-token state, as an RNN). FAVOR+ (`favor.py`) reuses these with random features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.base import Mechanism
from common.attention.dispatch import IMPLS, resolve_impl
from common.attention.gla import gla_chunked_dispatch
from common.attention.registry import Capabilities
from common.errors import ConfigError, check_choice, check_range

MODES = ("parallel", "chunked", "recurrent")


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 > 0 (the paper's choice)."""
    return F.elu(x) + 1


def relu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = relu(x) >= 0."""
    return F.relu(x)


FEATURE_MAPS = {"elu": elu_feature_map, "relu": relu_feature_map}


def _divide(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    """num / (den + eps), with an all-zero denominator (no visible key) giving 0 instead of NaN (also in grads)."""
    den = den + eps
    return num / torch.where(den > 0, den, torch.ones_like(den))[..., None]


def _apply_mask(k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the features of masked keys: they then add nothing to any sum. mask [B, N] True = real."""
    return k if mask is None else k * mask.to(k.dtype)[:, None, :, None]


def linear_attention_torch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Non-causal linear attention, O(N D Dv).

    Shapes:
        q, k: [B, H, N, D] features (already through phi, non-negative); v: [B, H, N, Dv];
        mask: [B, N] bool key-padding (True = real). Returns [B, H, N, Dv].
    """
    k = _apply_mask(k, mask)
    kv = k.transpose(-2, -1) @ v  # [B, H, D, Dv]
    den = q @ k.sum(dim=-2)[..., None]  # [B, H, N, 1]
    return _divide(q @ kv, den[..., 0], eps)


def causal_linear_attention_parallel_torch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Causal linear attention as the masked quadratic map: A = tril(phi(q) phi(k)^T), out = A v / A 1.

    O(N^2 D) time and O(N^2) memory: the reference the other two forms are checked against.

    Shapes:
        q, k: [B, H, N, D] features; v: [B, H, N, Dv]; mask: [B, N] bool. Returns [B, H, N, Dv].
    """
    k = _apply_mask(k, mask)
    attn = (q @ k.transpose(-2, -1)).tril()  # [B, H, N, N]
    return _divide(attn @ v, attn.sum(dim=-1), eps)


def causal_linear_attention_chunked_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-6,
    chunk_size: int = 64,
) -> torch.Tensor:
    """Causal linear attention in chunks: exact masked map inside a chunk, prefix sums of phi(k)^T v between.

    O(N C D + N D Dv) time for chunk size C. N need not be a multiple of C (zero padding at the end).

    Shapes:
        q, k: [B, H, N, D] features; v: [B, H, N, Dv]; mask: [B, N] bool. Returns [B, H, N, Dv].
    """
    k = _apply_mask(k, mask)
    n = q.shape[-2]
    pad = (-n) % chunk_size
    if pad:  # zero keys add nothing; padded queries are cut off below
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    q, k, v = (t.unflatten(-2, (-1, chunk_size)) for t in (q, k, v))  # [B, H, n_chunks, C, D]
    # state before each chunk: exclusive prefix sums over chunks of k^T v and of k
    kv = k.transpose(-2, -1) @ v  # [B, H, n_chunks, D, Dv]
    kv_before = kv.cumsum(dim=2) - kv
    k_sum = k.sum(dim=-2)  # [B, H, n_chunks, D]
    k_before = k_sum.cumsum(dim=2) - k_sum
    intra = (q @ k.transpose(-2, -1)).tril()  # [B, H, n_chunks, C, C]
    num = intra @ v + q @ kv_before
    den = intra.sum(dim=-1) + (q @ k_before[..., None])[..., 0]
    return _divide(num, den, eps).flatten(2, 3)[:, :, :n]


def causal_linear_attention_gla(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Causal linear attention through the chunked GLA kernel: gates g = 0, scale 1, and a ones column
    appended to v, so one call gives the numerator sum_{s<=t} (q_t . k_s) v_s and (last column) the
    denominator sum_{s<=t} q_t . k_s.

    Shapes:
        q, k: [B, H, N, D] features (D <= 256); v: [B, H, N, Dv]; mask: [B, N] bool. Returns [B, H, N, Dv].
    """
    k = _apply_mask(k, mask)
    v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)  # [B, H, N, Dv + 1]
    q, k, v1 = (t.transpose(1, 2).contiguous() for t in (q, k, v1))  # GLA layout [B, N, H, D]
    out, _ = gla_chunked_dispatch(q, k, v1, torch.zeros_like(q), impl="triton", scale=1.0)
    out = out.transpose(1, 2)  # [B, H, N, Dv + 1]
    return _divide(out[..., :-1], out[..., -1], eps)


def causal_linear_attention_recurrent_torch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Causal linear attention as an RNN: S_t = S_{t-1} + phi(k_t)^T v_t, z_t = z_{t-1} + phi(k_t).

    O(N D Dv) time, O(D Dv) state; a Python loop over tokens (the decoding form, slow for training).

    Shapes:
        q, k: [B, H, N, D] features; v: [B, H, N, Dv]; mask: [B, N] bool. Returns [B, H, N, Dv].
    """
    k = _apply_mask(k, mask)
    state = q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])  # [B, H, D, Dv]
    norm = q.new_zeros(*q.shape[:2], q.shape[-1])  # [B, H, D]
    outs = []
    for t in range(q.shape[-2]):
        state = state + k[:, :, t, :, None] * v[:, :, t, None, :]
        norm = norm + k[:, :, t]
        num = (q[:, :, t, None, :] @ state)[:, :, 0]  # [B, H, Dv]
        den = (q[:, :, t] * norm).sum(dim=-1)
        outs.append(_divide(num, den, eps))
    return torch.stack(outs, dim=2)


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    mode: str = "chunked",
    mask: torch.Tensor | None = None,
    eps: float = 1e-6,
    chunk_size: int = 64,
    impl: str = "auto",
) -> torch.Tensor:
    """Linear attention on feature-mapped q, k; `mode` picks the causal implementation.

    `impl`: "auto" runs the chunked GLA Triton kernel (`causal_linear_attention_gla`) for causal
    mode="chunked" on CUDA tensors (float32/bf16/fp16, D <= 256), else torch; "torch" forces the
    reference; "triton" forces the kernel (causal chunked only, else ConfigError). Non-causal is torch.

    Shapes:
        q, k: [B, H, N, D] (non-negative features); v: [B, H, N, Dv]; mask: [B, N] bool (True = real key).
        Returns [B, H, N, Dv].
    """
    check_choice("impl", impl, IMPLS)
    check_choice("mode", mode, MODES)
    if impl == "triton" and not (causal and mode == "chunked"):
        raise ConfigError("impl", impl, "causal=True and mode='chunked' for the Triton kernel, or impl='torch'")
    if causal and mode == "chunked" and impl != "torch":
        kernel_ok = q.dtype in (torch.float32, torch.bfloat16, torch.float16) and q.shape[-1] <= 256
        if resolve_impl("linear", impl, q, k, v, mask) == "triton" and (impl == "triton" or kernel_ok):
            return causal_linear_attention_gla(q, k, v, mask=mask, eps=eps)
    if not causal:
        return linear_attention_torch(q, k, v, mask=mask, eps=eps)
    if mode == "parallel":
        return causal_linear_attention_parallel_torch(q, k, v, mask=mask, eps=eps)
    if mode == "chunked":
        return causal_linear_attention_chunked_torch(q, k, v, mask=mask, eps=eps, chunk_size=chunk_size)
    return causal_linear_attention_recurrent_torch(q, k, v, mask=mask, eps=eps)


class LinearAttention(Mechanism):
    """Multi-head kernelised linear attention, non-causal or causal.

    Paper: Katharopoulos, Vyas, Pappas, Fleuret, "Transformers are RNNs: Fast Autoregressive Transformers
    with Linear Attention" (ICML 2020, arXiv 2006.16236).
    Cost: O(N D Dv) time per head, O(D Dv) state; causal "parallel" mode is O(N^2) (the reference form),
    "chunked" O(N C D + N D Dv) for chunk size C.

    Per head, softmax(q k^T) is replaced by phi(q) phi(k)^T with a positive feature map phi
    ("elu": elu + 1, the paper's; "relu"), and out_i = phi(q_i) sum_j phi(k_j)^T v_j / (phi(q_i) sum_j phi(k_j)
    + eps), the sums over all j (non-causal) or j <= i (causal). Choices where the paper leaves room: no
    1/sqrt(d) scale on q, k (phi is applied to the raw projections, as the paper's code); eps = 1e-6 added
    to the denominator; masked keys have their features zeroed; q, k, v from one linear map
    and an output projection, as softmax attention.

    Args:
        dim: model width C.
        num_heads: heads H; `dim` must be divisible by it.
        feature_map: "elu" or "relu".
        causal: token i sees tokens <= i.
        mode: causal implementation: "parallel", "chunked" (default) or "recurrent" (all equal).
        chunk_size: chunk length for "chunked".
        qkv_bias: bias in the qkv projection.
        eps: added to the denominator.
        proj_drop: dropout after the output projection.

    Shapes:
        x: [B, N, C]; mask: [B, N] bool (True = real token). Output [B, N, C].
    """

    capabilities = Capabilities(
        paper="Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention "
        "(Katharopoulos et al., ICML 2020, arXiv 2006.16236)",
        causal=True,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N",
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        feature_map: str = "elu",
        causal: bool = False,
        mode: str = "chunked",
        chunk_size: int = 64,
        qkv_bias: bool = True,
        eps: float = 1e-6,
        proj_drop: float = 0.0,
    ):
        super().__init__(num_heads, dim=dim)
        check_choice("feature_map", feature_map, FEATURE_MAPS)
        check_choice("mode", mode, MODES)
        check_range("chunk_size", chunk_size, 1)
        self.causal, self.mode, self.chunk_size, self.eps = causal, mode, chunk_size, eps
        self.feature_map = FEATURE_MAPS[feature_map]
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C]."""
        q, k, v = self.split_heads(self.qkv(x))  # 3 x [B, H, N, d]
        out = linear_attention(
            self.feature_map(q),
            self.feature_map(k),
            v,
            causal=self.causal,
            mode=self.mode,
            mask=mask,
            eps=self.eps,
            chunk_size=self.chunk_size,
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).flatten(2)))
