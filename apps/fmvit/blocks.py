"""FMViT's blocks: gMLP, RLMHSA, the convolutional fusion block (CFB) and the multi-frequency mixing block (FMB).

All blocks work on channel-first maps [B, C, H, W] and normalise with BatchNorm (no LayerNorm, no
token reshapes outside the attention), so that every normalisation folds into a neighbouring conv at
deploy time (`apps.fmvit.rep`). `reparameterize()` lives on the primitives; the model calls them all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from apps.fmvit.rep import ConvBN, RepConv1x1, RepConvKxK
from common.attention.softmax import softmax_attention
from common.errors import ConfigError, check_range


class GMLP(nn.Module):
    """gMLP (convolutional multi-group reparameterised MLP): BN -> RepConv1x1(C -> rC) -> ReLU -> RepConv1x1(rC -> C).

    Each RepConv1x1 trains as parallel dense + grouped 1x1 convs (`groups`, each with BN) and deploys as one
    1x1 conv; the pre-norm BN folds into the first one.

    Shapes: x [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(self, dim: int, mlp_ratio: float = 2.0, groups=(1, 4), drop: float = 0.0, deploy: bool = False):
        super().__init__()
        check_range("mlp_ratio", mlp_ratio, 0.0, low_inclusive=False)
        hidden = int(dim * mlp_ratio)
        hidden -= hidden % max(groups)  # keep the hidden width divisible by every group count
        self.fc1 = RepConv1x1(dim, hidden, groups, pre_norm=True, deploy=deploy)
        self.act = nn.ReLU()
        self.fc2 = RepConv1x1(hidden, dim, groups, deploy=deploy)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class RLMHSA(nn.Module):
    """Lightweight multi-head self-attention over a low-frequency copy of the map.

    The map is average-pooled by `rate` (a low-pass filter: the larger the rate, the lower the frequency
    band the attention sees and the fewer tokens, N = ceil(H/r) * ceil(W/r)). One re-parameterisable 1x1
    projection (pre-norm BN folded in at deploy) gives the queries and ONE shared key/value tensor (K = V,
    the "lightweight" part: one projection less than MHSA). Heads go through the attention core's
    `softmax_attention` (SDPA). The result returns to the full grid by repeating each token over its
    r x r window (nearest upsampling), with `attn_dim` channels; the FMB's fusion conv is its output
    projection.

    Shapes: x [B, C, H, W] -> [B, attn_dim, H, W]; inside q, k [B, heads, N, head_dim].
    """

    def __init__(self, dim: int, attn_dim: int, head_dim: int = 32, rate: int = 1, groups=(1,), deploy: bool = False):
        super().__init__()
        check_range("rate", rate, 1)
        if attn_dim % head_dim:
            raise ConfigError("head_dim", head_dim, f"a divisor of the attention width {attn_dim}")
        self.rate, self.heads, self.head_dim = int(rate), attn_dim // head_dim, head_dim
        self.qk = RepConv1x1(dim, 2 * attn_dim, groups, pre_norm=True, deploy=deploy)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        r = self.rate
        low = F.avg_pool2d(x, r, r, ceil_mode=True) if r > 1 else x  # [B, C, h', w']
        hp, wp = low.shape[-2:]
        q, k = self.qk(low).flatten(2).chunk(2, dim=1)  # each [B, attn_dim, N]
        q = q.reshape(b, self.heads, self.head_dim, hp * wp).transpose(-2, -1)  # [B, heads, N, D]
        k = k.reshape(b, self.heads, self.head_dim, hp * wp).transpose(-2, -1)
        out = softmax_attention(q, k, k)  # shared key/value
        out = out.transpose(-2, -1).reshape(b, self.heads * self.head_dim, hp, wp)
        if r > 1:
            out = F.interpolate(out, scale_factor=r, mode="nearest")[:, :, :h, :w]
        return out


class CFB(nn.Module):
    """Convolutional fusion block: x + LocalMixer(x), then x + gMLP(x).

    LocalMixer fuses neighbouring positions per head group: RepConvKxK (3x3, groups = dim / head_dim,
    with 1x1 and identity branches at training time) -> ReLU -> 1x1 projection across the groups.

    Shapes: x [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(
        self,
        dim: int,
        head_dim: int = 32,
        mlp_ratio: float = 2.0,
        mlp_groups=(1, 4),
        drop_path: float = 0.0,
        deploy: bool = False,
    ):
        super().__init__()
        if dim % head_dim:
            raise ConfigError("head_dim", head_dim, f"a divisor of the stage width {dim}")
        self.mixer = nn.Sequential(
            RepConvKxK(dim, 3, groups=dim // head_dim, deploy=deploy), nn.ReLU(), nn.Conv2d(dim, dim, 1)
        )
        self.mlp = GMLP(dim, mlp_ratio, mlp_groups, deploy=deploy)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.mixer(x))
        return x + self.drop_path(self.mlp(x))


class FMB(nn.Module):
    """Multi-frequency mixing block: high-frequency conv features and low-frequency attention features,
    concatenated and mixed, then a gMLP.

        high  = ReLU(RepConvKxK_3x3(x))                       [B, C, H, W]   local, high frequency
        low_r = RLMHSA_r(x)  for r in rates                   [B, Ca, H, W]  global, pooled by r
        x     = x + DropPath(ConvBN_1x1(cat[high, low_r..]))  the frequency mixing
        x     = x + DropPath(gMLP(x))

    Shapes: x [B, C, H, W] -> [B, C, H, W]; Ca = attn_ratio * C rounded down to a multiple of head_dim.
    """

    def __init__(
        self,
        dim: int,
        rates=(1, 2),
        head_dim: int = 32,
        attn_ratio: float = 0.5,
        mlp_ratio: float = 2.0,
        mlp_groups=(1, 4),
        drop_path: float = 0.0,
        deploy: bool = False,
    ):
        super().__init__()
        rates = tuple(int(r) for r in rates)
        if not rates or min(rates) < 1:
            raise ConfigError("rates", rates, "a non-empty list of pooling rates >= 1")
        if dim % head_dim:
            raise ConfigError("head_dim", head_dim, f"a divisor of the stage width {dim}")
        check_range("attn_ratio", attn_ratio, 0.0, 1.0, low_inclusive=False)
        attn_dim = max(head_dim, int(dim * attn_ratio) // head_dim * head_dim)
        self.high = nn.Sequential(RepConvKxK(dim, 3, groups=dim // head_dim, deploy=deploy), nn.ReLU())
        self.lows = nn.ModuleList(RLMHSA(dim, attn_dim, head_dim, r, deploy=deploy) for r in rates)
        self.fuse = ConvBN(dim + len(rates) * attn_dim, dim, k=1, deploy=deploy)
        self.mlp = GMLP(dim, mlp_ratio, mlp_groups, deploy=deploy)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        mixed = self.fuse(torch.cat([self.high(x), *(low(x) for low in self.lows)], dim=1))
        x = x + self.drop_path(mixed)
        return x + self.drop_path(self.mlp(x))
