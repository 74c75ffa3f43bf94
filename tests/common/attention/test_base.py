"""The shared mechanism base: one heads check and one head split."""

import pytest
import torch

from common.attention.base import Mechanism, check_heads
from common.errors import ConfigError


def test_check_heads_names_the_width_that_does_not_split():
    check_heads(4, dim=16, qk_dim=8)
    with pytest.raises(ConfigError) as err:
        check_heads(4, dim=16, qk_dim=6)
    assert str(err.value) == "bad config value num_heads=4: expected a divisor of qk_dim=6"
    with pytest.raises(ConfigError, match="a divisor of dim=0"):
        check_heads(4, dim=0)  # divisible, but no head would have a channel
    with pytest.raises(ConfigError, match=r"num_heads=0: expected a number in \[1, inf\]"):
        check_heads(0, dim=16)


def test_split_heads_puts_channel_blocks_on_heads():
    """Channel j of part p, head h lies at p * H * D + h * D + j of the packed projection."""
    heads, head_dim = 3, 2
    module = Mechanism(heads, dim=heads * head_dim)
    packed = torch.arange(2 * 5 * 3 * heads * head_dim).reshape(2, 5, -1)  # [B=2, N=5, 3 * H * D]
    q, k, v = module.split_heads(packed)
    assert q.shape == k.shape == v.shape == (2, heads, 5, head_dim)
    for p, part in enumerate((q, k, v)):
        for h in range(heads):
            start = p * heads * head_dim + h * head_dim
            torch.testing.assert_close(part[:, h], packed[..., start : start + head_dim], rtol=0, atol=0)
    (only,) = module.split_heads(packed[..., : heads * head_dim], parts=1)
    torch.testing.assert_close(only, q, rtol=0, atol=0)
