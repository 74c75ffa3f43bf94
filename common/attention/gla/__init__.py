"""Gated Linear Attention: the layer and its functional forms ([B, T, H, D] layout, log-space gates).

    from common.attention.gla import GatedLinearAttention, gla
    o, final_state = gla(q, k, v, g, initial_state=s0, output_final_state=True, mode="chunked")

A Triton kernel will sit beside `reference.py` and be picked by `gla(..., impl=...)`.
"""

from common.attention.gla.module import GatedLinearAttention
from common.attention.gla.reference import (
    GLA_MODES,
    gla,
    gla_chunked_torch,
    gla_parallel_torch,
    gla_recurrent_torch,
)

__all__ = [
    "GLA_MODES",
    "GatedLinearAttention",
    "gla",
    "gla_chunked_torch",
    "gla_parallel_torch",
    "gla_recurrent_torch",
]
