"""Gated Linear Attention: the layer and its functional forms ([B, T, H, D] layout, log-space gates).

    from common.attention.gla import GatedLinearAttention, gla
    o, final_state = gla(q, k, v, g, initial_state=s0, output_final_state=True, mode="chunked")

`gla(..., impl="auto" | "torch" | "triton")` (module.py) picks the torch forms (reference.py) or the Triton
kernel (triton.py, chunked mode, forward and backward); this package imports without triton.
"""

from common.attention.gla.module import GLA_MODES, GatedLinearAttention, gla, gla_chunked_dispatch
from common.attention.gla.reference import gla_chunked_torch, gla_parallel_torch, gla_recurrent_torch

__all__ = [
    "GLA_MODES",
    "GatedLinearAttention",
    "gla",
    "gla_chunked_dispatch",
    "gla_chunked_torch",
    "gla_parallel_torch",
    "gla_recurrent_torch",
]
