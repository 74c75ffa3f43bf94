"""BiLevelRoutingAttention: BiFormer's token mixer (routing core + projections + local context enhancement)."""

from __future__ import annotations

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.dispatch import IMPLS, resolve_impl
from common.attention.registry import Capabilities
from common.attention.routing_bilevel.reference import bilevel_routing_attention_torch
from common.errors import ConfigError, check_choice, check_range

# what the Triton kernel takes (triton.py checks them)
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
KERNEL_MAX_HEAD_DIM = 256


def bilevel_routing_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    n_win: int,
    topk: int,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Bi-level routing attention core, dispatched by `impl` (`common.attention.dispatch.resolve_impl`).

    `impl="auto"` picks the fused Triton kernel when q, k, v are on CUDA and triton imports, else the torch
    reference; `impl="torch"` forces the reference; `impl="triton"` forces the kernel (ConfigError when it
    cannot run). The kernel routes in fp32 (the reference in the input dtype). Arguments and shapes as in
    `bilevel_routing_attention_torch`.
    """
    if resolve_impl("routing_bilevel", impl, q, k, v) == "triton":
        from common.attention.routing_bilevel.triton import bilevel_routing_attention_triton

        return bilevel_routing_attention_triton(q, k, v, num_heads, n_win, topk, scale)
    return bilevel_routing_attention_torch(q, k, v, num_heads, n_win, topk, scale)


class BiLevelRoutingAttention(Mechanism):
    """Bi-level routing attention (BRA) with local context enhancement, on a 2-D token map.

    Paper: "BiFormer: Vision Transformer with Bi-Level Routing Attention", Zhu et al., CVPR 2023
    (arXiv 2303.08810). One linear layer gives q, k (width `qk_dim`) and v (width `dim`). The map is cut
    into `n_win` x `n_win` regions; region-level q/k (token means) give a region affinity, each region keeps
    its `topk` most affine regions, and its tokens attend (softmax, multi-head) to all tokens of those
    regions. LCE: a depth-wise conv (kernel `side_dwconv`, 5 in BiFormer) on the V map is added to the
    attention output before the output projection.

    Cost: per query region, attention over `topk` regions of N / S^2 tokens, so O(N * topk * N / S^2) for
    the tokens plus O(S^4) for routing ("N k" with k = topk * N / S^2 keys per query; O(N^(4/3)) when S
    grows with the map as in the paper).

    Choices (see `bilevel_routing_attention_torch` for the core):
        - Routing uses detached region q/k and no extra parameters; routing weights are not applied to the
          values (the released models: `diff_routing=False`, `param_routing=False`, `mul_weight='none'`),
          and keys/values are not downsampled (`kv_downsample_mode='identity'`).
        - Scale = qk_dim ** -0.5 (full qk width) for routing and token attention, as in the official code.
        - When H or W is not divisible by `n_win`, the q/k/v maps are zero-padded at the bottom/right to the
          next multiple; padded tokens are masked out of the region means and of the keys, and cropped from
          the output. LCE runs on the unpadded V map (its own zero padding of `side_dwconv // 2`).
        - No key-padding mask: padding is handled through `hw` (capabilities mask=False).

    Args:
        dim: model width C.
        num_heads: heads (C and qk_dim divisible by it).
        n_win: regions per side S (7 in BiFormer).
        topk: routed regions per region (1 <= topk <= n_win**2; BiFormer-T uses 1, 4, 16 by stage).
        qk_dim: width of q and k (default `dim`).
        side_dwconv: LCE kernel size (0 disables LCE).
        qkv_bias: bias in the qkv projection.
        impl: "auto", "torch" or "triton" for the routing core (see `bilevel_routing_attention`).

    Shapes:
        x: [B, N, C] with `hw=(H, W)` and N = H * W, or a channel-last map [B, H, W, C] (then `hw` is
            optional); returns the same shape as `x`.
    """

    capabilities = Capabilities(
        paper="BiFormer: Vision Transformer with Bi-Level Routing Attention (CVPR 2023, arXiv 2303.08810)",
        causal=False,
        layout="2d",
        mask=False,
        bias=False,
        cost="N k",
        token_mixer=True,
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_win: int = 7,
        topk: int = 4,
        qk_dim: int | None = None,
        side_dwconv: int = 5,
        qkv_bias: bool = True,
        impl: str = "auto",
    ):
        qk_dim = dim if qk_dim is None else qk_dim
        super().__init__(num_heads, dim=dim, qk_dim=qk_dim)
        check_range("n_win", n_win, 1)
        check_range("topk", topk, 1, n_win * n_win)
        check_range("side_dwconv", side_dwconv, 0)
        if side_dwconv and side_dwconv % 2 == 0:
            raise ConfigError("side_dwconv", side_dwconv, "0 or an odd kernel size")
        check_choice("impl", impl, IMPLS)
        self.dim, self.n_win, self.topk, self.qk_dim, self.impl = (
            dim,
            n_win,
            topk,
            qk_dim,
            impl,
        )
        self.scale = qk_dim**-0.5
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim, bias=qkv_bias)
        self.lce = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) if side_dwconv else None
        self.wo = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, hw: tuple[int, int] | None = None
    ) -> torch.Tensor:
        if mask is not None:
            raise ValueError("BiLevelRoutingAttention takes no key-padding mask (layout '2d'; pass the map size as hw)")
        if x.ndim == 4:
            batch, height, width, _ = x.shape
            if hw is not None and tuple(hw) != (height, width):
                raise ValueError(f"hw={tuple(hw)} does not match the map's {(height, width)}")
            x_map = x
        else:
            if hw is None:
                raise ValueError("BiLevelRoutingAttention needs hw=(H, W) for token input [B, N, C]")
            batch, tokens, channels = x.shape
            height, width = hw
            if height * width != tokens:
                raise ValueError(f"hw={tuple(hw)} gives {height * width} tokens, x has {tokens}")
            x_map = x.view(batch, height, width, channels)

        q, k, v = self.qkv(x_map).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        out = bilevel_routing_attention(q, k, v, self.num_heads, self.n_win, self.topk, self.scale, impl=self.impl)
        if self.lce is not None:
            out = out + self.lce(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out = self.wo(out)
        return out if x.ndim == 4 else out.reshape(batch, height * width, self.dim)
