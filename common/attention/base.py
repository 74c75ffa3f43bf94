"""What every attention mechanism shares: declared capabilities, one heads check, one way to split heads.

class MyAttention(Mechanism):
    capabilities = Capabilities(paper="...", causal=True, qkv_bias=True)

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__(num_heads, dim=dim)      # ConfigError unless num_heads divides dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)

    def forward(self, x, mask=None):
        q, k, v = self.split_heads(self.qkv(x))   # each [B, H, N, D]
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from common.attention.registry import Capabilities
from common.errors import ConfigError, check_range


def check_heads(num_heads: int, **widths: int) -> None:
    """Raise the one heads ConfigError unless `num_heads >= 1` divides every named width (none may be 0)."""
    check_range("num_heads", num_heads, 1)
    for name, width in widths.items():
        if width < num_heads or width % num_heads:
            raise ConfigError("num_heads", num_heads, f"a divisor of {name}={width}")


class Mechanism(nn.Module):
    """Base class of every registered mechanism.

    Subclasses declare `capabilities` (what `build`, `available` and the generic block may ask of them) and
    start their constructor with `super().__init__(num_heads, dim=dim, ...)`, naming each width that the heads
    split. It owns no parameters, so it changes neither state_dict names nor the order of initialisation.
    """

    capabilities: ClassVar[Capabilities]

    def __init__(self, num_heads: int, **widths: int):
        super().__init__()
        check_heads(num_heads, **widths)
        self.num_heads = num_heads

    def split_heads(self, packed: torch.Tensor, parts: int = 3) -> tuple[torch.Tensor, ...]:
        """Packed projections side by side, [B, N, parts * H * D] -> `parts` tensors [B, H, N, D]."""
        return packed.unflatten(-1, (parts, self.num_heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
