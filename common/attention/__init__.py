"""The attention core: one file (or small package) per mechanism, a registry, kernels beside references.

from common.attention import build, available
attn = build("softmax", dim=256, num_heads=8, causal=True)
y = attn(x)                       # x: [B, N, C] -> [B, N, C]
available(causal=True)            # names that can run causally

A new mechanism subclasses `Mechanism` (base.py: the heads check, `split_heads`), declares its
`capabilities`, and gets one line in `registry.MECHANISMS`.
"""

from common.attention.base import Mechanism
from common.attention.registry import MECHANISMS, Capabilities, available, build, capabilities, get_class

__all__ = ["MECHANISMS", "Capabilities", "Mechanism", "available", "build", "capabilities", "get_class"]
