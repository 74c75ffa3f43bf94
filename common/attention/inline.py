"""InLine attention: injective linear attention plus a local (depth-wise convolution) term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import ConfigError, check_choice

_KERNELS = {
    "identity": lambda t: t,
    "relu": F.relu,
    "leakyrelu": F.leaky_relu,
    "exp": lambda t: torch.exp(0.2 * t),  # the official code's exp kernel, temperature 0.2
}


def inline_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The explicit InLine attention matrix (O(N^2); for inspection and tests).

    `w_ij = (q_i.k_j - mean_s q_i.k_s) / n + 1 / n` over the n real keys: each row sums to 1 by
    subtraction, not by division, so the map from a query to its row is injective (scaling q changes it).

    Shapes:
        q: [B, H, Nq, D] (already through the kernel and scaled); k: [B, H, N, D]; mask: [B, N] bool
        -> [B, H, Nq, N] (0 at padded keys).
    """
    scores = q @ k.transpose(-2, -1)
    if mask is None:
        return (scores - scores.mean(-1, keepdim=True) + 1) / k.shape[-2]
    real = mask.to(q.dtype)[:, None, None, :]
    n = real.sum(-1, keepdim=True)
    mean = (scores * real).sum(-1, keepdim=True) / n
    return (scores - mean + 1) / n * real


def inline_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """InLine attention in linear time: `sum_j w_ij v_j` with `w` from `inline_weights`, never forming `w`.

    `out_i = q_i^T (K^T V / n) - (q_i . mean K) mean V + mean V`, means over the n real tokens.

    Shapes:
        q: [B, H, Nq, D]; k: [B, H, N, D]; v: [B, H, N, Dv]; mask: [B, N] bool -> [B, H, Nq, Dv].
    """
    if mask is None:
        n = k.shape[-2]
    else:
        real = mask.to(k.dtype)[:, None, :, None]
        n = real.sum(-2, keepdim=True)  # [B, 1, 1, 1]
        k, v = k * real, v * real
    kv = k.transpose(-2, -1) @ v / n  # [B, H, D, Dv]
    k_mean = k.sum(-2, keepdim=True) / n  # [B, H, 1, D]
    v_mean = v.sum(-2, keepdim=True) / n  # [B, H, 1, Dv]
    return q @ kv - (q @ k_mean.transpose(-2, -1)) * v_mean + v_mean


class _GroupedLinear(nn.Module):
    """A linear map applied per channel group (the official code's grouped 1x1 Conv1d), as one einsum.

    Shapes:
        x: [B, in_features] -> [B, out_features].
    """

    def __init__(self, in_features: int, out_features: int, groups: int):
        super().__init__()
        fan_in = in_features // groups
        bound = fan_in**-0.5  # nn.Conv1d's default init range
        self.weight = nn.Parameter(torch.empty(groups, out_features // groups, fan_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, out_features // groups).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups, _, fan_in = self.weight.shape
        out = torch.einsum("goi,bgi->bgo", self.weight, x.view(x.shape[0], groups, fan_in)) + self.bias
        return out.reshape(x.shape[0], -1)


class InLineAttention(Mechanism):
    """InLine attention: injective linear attention plus a dynamic local depth-wise convolution of V.

    Paper: "Bridging the Divide: Reconsidering Softmax and Linear Attention", Han et al., NeurIPS 2024,
    arXiv 2412.06590.

    Linear attention normalises by division, `phi(q).phi(k_j) / sum_s phi(q).phi(k_s)`, which maps `q` and
    `2q` to the same attention row (not injective). InLine normalises by subtraction,
    `w_ij = phi(q_i).phi(k_j) - mean_s phi(q_i).phi(k_s) + 1/N` (rows still sum to 1, weights may be
    negative), which is injective, and computes it in O(N) via `inline_attention`. As in the official code
    the kernel output of the query is scaled by `head_dim^-0.5 / N`.

    Local term: the paper's local modelling residual, a depth-wise 3x3 (`local_kernel`) convolution of V
    whose per-channel kernel is predicted from the mean token by a small per-head MLP (grouped linear maps,
    GELU; the official code's grouped 1x1 convolutions), added to the attention output before the output
    projection.

    Cost: O(N D^2) time, O(D^2) extra memory per head. Not causal (the means run over all tokens).

    Choices where the paper leaves a detail open:
        - Layout: `hw=(H, W)` runs the local convolution on the H x W grid; tokens before the last H*W
          (e.g. a class token) get no local term, like the official DeiT code. Without `hw` the tokens are a
          1 x N image, so the convolution is 1-D along the sequence (the middle row of the kernel).
        - Mask: means, sums and N run over real tokens only; padded values are zeroed before the
          convolution and excluded from the mean token that predicts the kernel.

    Shapes:
        x: [B, N, C] -> [B, N, C]; mask: [B, N] bool, True = real token; hw: (H, W) with H*W <= N.

    Args:
        dim: channels C; must be divisible by `num_heads`.
        num_heads: attention heads.
        kernel: feature map phi: "identity" (the paper's default), "relu", "leakyrelu" or "exp".
        local_kernel: odd size of the local depth-wise convolution (0 disables the local term).
        qkv_bias: bias on the query/key/value projection.
        proj_drop: dropout after the output projection.
    """

    capabilities = Capabilities(
        paper="Bridging the Divide: Reconsidering Softmax and Linear Attention (InLine; Han et al., NeurIPS 2024, "
        "arXiv 2412.06590)",
        causal=False,
        mask=True,
        cost="N",
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel: str = "identity",
        local_kernel: int = 3,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
    ):
        super().__init__(num_heads, dim=dim)
        check_choice("kernel", kernel, set(_KERNELS))
        if local_kernel < 0 or (local_kernel and local_kernel % 2 == 0):
            raise ConfigError("local_kernel", local_kernel, "an odd number, or 0 for no local term")
        self.head_dim, self.kernel, self.local_kernel = dim // num_heads, kernel, local_kernel
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.local = None
        if local_kernel:
            self.local = nn.Sequential(
                _GroupedLinear(dim, dim, num_heads),
                nn.GELU(),
                _GroupedLinear(dim, dim * local_kernel**2, num_heads),
            )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, *, hw: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """InLine attention plus the local term.

        Shapes:
            x: [B, N, C]; mask: [B, N] bool, True = real token; hw: (H, W), H*W <= N -> [B, N, C].
        """
        b, n, c = x.shape
        q, k, v = self.split_heads(self.qkv(x))
        phi = _KERNELS[self.kernel]
        out = inline_attention(phi(q) * self.scale, phi(k), v, mask)  # [B, H, N, D]
        out = out.transpose(1, 2).reshape(b, n, c)
        if self.local is not None:
            out = out + self._local_term(x, v.transpose(1, 2).reshape(b, n, c), mask, hw)
        return self.proj_drop(self.proj(out))

    def _local_term(self, x, v, mask, hw):
        """Dynamic depth-wise convolution of V on the token grid. Shapes: x, v [B, N, C] -> [B, N, C]."""
        b, n, c = x.shape
        height, width = (1, n) if hw is None else hw
        prefix = n - height * width
        if prefix < 0:
            raise ConfigError("hw", hw, f"a grid with H*W <= N={n}")
        if mask is None:
            mean_token = x.mean(1)
        else:
            real = mask.to(x.dtype)[..., None]
            mean_token = (x * real).sum(1) / real.sum(1).clamp_min(1.0)
            v = v * real
        size = self.local_kernel
        weight = self.local(mean_token).view(b, c, size * size, 1)  # one kernel per (sample, channel)
        grid = v[:, prefix:].transpose(1, 2).reshape(b, c, height, width)
        patches = F.unfold(grid, size, padding=size // 2).view(b, c, size * size, height * width)
        local = (patches * weight).sum(2).transpose(1, 2)  # depth-wise convolution: [B, H*W, C]
        return F.pad(local, (0, 0, prefix, 0))
