"""MultiScaleDeformableAttention: the nn.Module both DETR apps use (encoder self-attention, decoder cross-attention)."""

from __future__ import annotations

import math

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.deformable_ms.reference import deformable_ms_torch
from common.attention.dispatch import IMPLS, resolve_impl
from common.attention.registry import Capabilities
from common.errors import check_choice, check_range

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # what the Triton kernel takes (triton.py checks)


def deformable_ms(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    impl: str = "auto",
) -> torch.Tensor:
    """Multi-scale deformable attention core, dispatched by `impl` (see `common.attention.dispatch`).

    `impl="auto"` picks the Triton kernel (`deformable_ms_triton`) when the tensors are on CUDA and triton is
    installed, else the torch reference; float64 inputs (which the kernel does not take) stay on the
    reference. `impl="torch"` forces the reference, `impl="triton"` the kernel (a ConfigError when it cannot
    run). Arguments and shapes as in `deformable_ms_torch`.
    """
    chosen = resolve_impl("deformable_ms", impl, value, sampling_locations, attention_weights)
    tensors = (value, sampling_locations, attention_weights)
    if chosen == "triton" and impl == "auto" and any(t.dtype not in KERNEL_DTYPES for t in tensors):
        chosen = "torch"
    if chosen == "triton":
        from common.attention.deformable_ms.triton import deformable_ms_triton

        return deformable_ms_triton(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return deformable_ms_torch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


class MultiScaleDeformableAttention(Mechanism):
    """Multi-scale deformable attention (MSDA).

    Paper: "Deformable DETR: Deformable Transformers for End-to-End Object Detection", Zhu et al., ICLR 2021
    (arXiv 2010.04159). Each query predicts, per head, `num_points` sampling offsets around its reference
    point on each of `num_levels` feature maps and one attention weight per sampled point (softmax over
    levels x points), then takes the weighted sum of the bilinearly sampled values.

    Cost: O(Nq * H * L * P * D) for the sampling plus O((Nq + Nv) * C^2) for the projections, i.e. linear in
    the number of queries and values ("N k" with k = L * P samples per query and head).

    Not a token mixer: it is called with explicit queries, reference points and a flattened multi-scale
    value map (encoder self-attention passes the same tokens as `query` and `value`).

    Choices where the paper leaves details open (all as in the official Deformable-DETR code):
        - Offsets are normalised by each level's (W_l, H_l) for 2-d reference points, and by
          `num_points` and half the box size for 4-d (cx, cy, w, h) reference boxes.
        - Offsets init: zero weights, bias = one direction per head on a unit circle (cos, sin scaled so the
          larger component is 1), point p pushed (p + 1) pixels out, identical on every level. Attention
          weights init: zero weight and bias (uniform over the L * P points). Value and output projections:
          Xavier-uniform weights, zero bias.
        - `value_mask` (True = real token, the project's mask convention; Deformable DETR passes the
          inverse, a padding mask) zeroes the projected values of padding tokens.
        - No dropout inside; the surrounding layer adds it.

    Args:
        dim: model width C.
        num_heads: number of heads H (C must be divisible by H).
        num_levels: feature levels L.
        num_points: sampling points P per head and level.
        impl: "auto", "torch" or "triton" for the sampling core (see `deformable_ms`).

    Shapes:
        query: [B, Nq, C] (positional embedding already added by the caller).
        reference_points: [B, Nq, L, 2] normalised (x, y) in [0, 1], or [B, Nq, L, 4] boxes (cx, cy, w, h).
        value: [B, Nv, C] with Nv = sum_l H_l * W_l.
        spatial_shapes: [L, 2] integer (H_l, W_l); level_start_index: [L].
        value_mask: optional bool [B, Nv], True = real token.
        returns: [B, Nq, C].
    """

    capabilities = Capabilities(
        paper="Deformable DETR: Deformable Transformers for End-to-End Object Detection (ICLR 2021, arXiv 2010.04159)",
        causal=False,
        layout="multiscale",
        mask=True,
        bias=False,
        cost="N k",
        token_mixer=False,
    )

    def __init__(self, dim: int, num_heads: int, num_levels: int = 4, num_points: int = 4, impl: str = "auto"):
        super().__init__(num_heads, dim=dim)
        check_range("num_levels", num_levels, 1)
        check_range("num_points", num_points, 1)
        check_choice("impl", impl, IMPLS)
        self.dim, self.head_dim, self.num_levels, self.num_points, self.impl = (
            dim,
            dim // num_heads,
            num_levels,
            num_points,
            impl,
        )
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR initialisation (see the class docstring)."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float64) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values  # [H, 2], larger component = +-1
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float64).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        value_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        if spatial_shapes.shape != (levels, 2):
            raise ValueError(f"spatial_shapes must be [{levels}, 2], got {list(spatial_shapes.shape)}")
        # a check on tensor values: eager only (a compiled graph would break here); the kernel entry checks again
        if (
            not torch.compiler.is_compiling()
            and int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum()) != value.shape[1]
        ):
            raise ValueError(f"value has {value.shape[1]} tokens but spatial_shapes sum to a different number")

        v = self.value_proj(value)
        if value_mask is not None:
            v = v.masked_fill(~value_mask[..., None], 0.0)
        v = v.view(batch, -1, heads, self.head_dim)

        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)

        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: divide by (W_l, H_l)
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            # offsets are in units of half the box size, spread over the points
            centres, sizes = reference_points[:, :, None, :, None, :2], reference_points[:, :, None, :, None, 2:]
            locations = centres + offsets / points * sizes * 0.5
        else:
            raise ValueError(f"reference_points must end in 2 or 4, got {reference_points.shape[-1]}")

        out = deformable_ms(v, spatial_shapes, level_start_index, locations, weights, impl=self.impl)
        return self.output_proj(out)
