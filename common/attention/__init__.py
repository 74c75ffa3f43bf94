"""The attention core: one file (or small package) per mechanism, a registry, kernels beside references.

from common.attention import build, available
attn = build("softmax", dim=256, num_heads=8, causal=True)
y = attn(x)                       # x: [B, N, C] -> [B, N, C]
available(causal=True)            # names that can run causally
"""

from common.attention.base import Mechanism
from common.attention.registry import MECHANISMS, Capabilities, available, build, capabilities, get_class

__all__ = ["MECHANISMS", "Capabilities", "Mechanism", "available", "build", "capabilities", "get_class"]
