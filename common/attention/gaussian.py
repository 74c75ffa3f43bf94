"""GAAM: multi-head Gaussian adaptive attention, features reweighted by a learnable Gaussian of their deviation."""

from __future__ import annotations

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import check_choice, check_range


class GaussianAdaptiveAttention(Mechanism):
    """Multi-head Gaussian adaptive attention (GAAM): each value is weighted by a learnable Gaussian density
    of its normalised deviation from the mean along one axis, the weights normalised to sum to 1 along it.

    Paper: "Gaussian Adaptive Attention is All You Need: Robust Contextual Representations Across Multiple
    Modalities", Ioannides et al., arXiv 2401.11143.

    Channels are split into `num_heads` groups. Per head h, with mean `mu` and variance `var` of x along
    `axis` (computed from the data) and learnable mean offsets `delta_hg` and variance scales `c_hg`:

        y_g = (x - (mu + delta_hg)) / sqrt(var + eps)
        g   = sum_g pi_hg exp(-y_g^2 / (2 c_hg^2))         (pi = softmax of learnable mixture logits)
        out = x * g / sum_axis g

    With `num_gaussians=1` this is the paper's single Gaussian per head; the weighted mixture follows the
    official package's latest `MHGAAM.py` (`gioannides/Gaussian-Adaptive-Attention`), which also fixes
    `c` initialised to 2 and the unbiased variance used here.

    The axis (`axis=`): the official code takes a `norm_axis` and computes statistics (and the
    normalisation) along it. "tokens" (default) uses the token axis, so each channel's weights form a
    distribution over the sequence: the only choice that mixes information across tokens, which a token
    mixer needs. "features" uses each head's channels within each token (the official `norm_axis=-1`):
    a per-token recalibration of features, no token mixing.

    Cost: O(N C) time and memory. Not causal in "tokens" mode (statistics over the whole sequence).

    Choices where the paper leaves a detail open:
        - Heads always split the channels. The official code splits the tensor along `norm_axis` itself,
          which for the token axis would cut the sequence into H contiguous chunks; splitting channels
          keeps every head over the whole sequence and works for any N.
        - `proj=True` (default) adds an output linear projection like the other token mixers; the paper's
          module has none (`proj=False`).
        - Mask: statistics and the normalising sum run over real tokens only; padded positions pass
          through unchanged (as the official `padding_value` handling).

    Shapes:
        x: [B, N, C] -> [B, N, C]; mask: [B, N] bool, True = real token.

    Args:
        dim: channels C; must be divisible by `num_heads`.
        num_heads: heads, each with its own Gaussian parameters.
        num_gaussians: Gaussians per head (mixed by learnable softmax weights).
        axis: "tokens" or "features": the axis the Gaussian statistics and normalisation run along.
        init_c: initial variance scale c.
        eps: added to the variance and used as the floor of the normalising sum.
        proj: add an output linear projection.
    """

    capabilities = Capabilities(
        paper="Gaussian Adaptive Attention is All You Need (GAAM; Ioannides et al., arXiv 2401.11143)",
        causal=False,
        mask=True,
        cost="N",
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_gaussians: int = 1,
        axis: str = "tokens",
        init_c: float = 2.0,
        eps: float = 1e-8,
        proj: bool = True,
    ):
        super().__init__(num_heads, dim=dim)
        check_range("num_gaussians", num_gaussians, 1)
        check_choice("axis", axis, {"tokens", "features"})
        check_range("init_c", init_c, 0.0, low_inclusive=False)
        self.head_dim, self.axis, self.eps = dim // num_heads, axis, eps
        self.mean_offsets = nn.Parameter(torch.zeros(num_heads, num_gaussians))
        self.c = nn.Parameter(torch.full((num_heads, num_gaussians), float(init_c)))
        self.mixture_logits = nn.Parameter(torch.zeros(num_heads, num_gaussians))
        self.proj = nn.Linear(dim, dim) if proj else nn.Identity()

    def gaussian_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The normalised Gaussian weights, summing to 1 along `axis` (0 at padded tokens in "tokens" mode).

        Shapes:
            x: [B, N, C]; mask: [B, N] bool -> [B, N, num_heads, head_dim].
        """
        b, n, _ = x.shape
        xh = x.reshape(b, n, self.num_heads, self.head_dim)
        dim = 1 if self.axis == "tokens" else 3
        real = xh.new_ones(b, n, 1, 1) if mask is None else mask.to(x.dtype)[:, :, None, None]
        weight = real.expand_as(xh) if self.axis == "tokens" else xh.new_ones(())
        count = weight.sum(dim, keepdim=True) if self.axis == "tokens" else xh.new_tensor(float(self.head_dim))
        mean = (xh * weight).sum(dim, keepdim=True) / count.clamp_min(1.0)
        var = ((xh - mean) ** 2 * weight).sum(dim, keepdim=True) / (count - 1).clamp_min(1.0)  # unbiased

        offsets = self.mean_offsets[:, None, :]  # [H, 1, G], broadcast over head channels
        y = (xh[..., None] - (mean[..., None] + offsets)) / torch.sqrt(var[..., None] + self.eps)
        density = torch.exp(-(y**2) / (2 * self.c[:, None, :] ** 2))  # [B, N, H, D, G]
        mixture = (density * self.mixture_logits.softmax(-1)[:, None, :]).sum(-1)  # [B, N, H, D]
        if self.axis == "tokens":
            mixture = mixture * real
        return mixture / mixture.sum(dim, keepdim=True).clamp_min(self.eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Gaussian adaptive reweighting of x.

        Shapes:
            x: [B, N, C]; mask: [B, N] bool, True = real token -> [B, N, C].
        """
        b, n, c = x.shape
        out = x * self.gaussian_weights(x, mask).reshape(b, n, c)
        if mask is not None:
            out = torch.where(mask[..., None].bool(), out, x)
        return self.proj(out)
