"""Agent attention: agents pooled from queries, aggregation then broadcast, DWC; masks; 1-D and 2-D layouts."""

from __future__ import annotations

import pytest
import torch

from common.attention import build, capabilities
from common.attention.agent import AgentAttention
from common.errors import ConfigError
from tests.common.attention.helpers_b import assert_finite_grads, assert_mask_honoured, padding_mask

DIM, HEADS = 8, 2


def make(**kwargs):
    torch.manual_seed(0)
    return AgentAttention(DIM, HEADS, **kwargs).double()


def explicit_agent_attention(module, x, agents_of_q):
    """softmax(Q A^T / sqrt(d)) softmax(A K^T / sqrt(d)) V per head, then proj (no DWC), written out."""
    batch, tokens, _ = x.shape
    q, k, v = module.qkv(x).chunk(3, dim=-1)
    agents = agents_of_q(q)  # [B, n, C]
    d = DIM // HEADS
    outs = []
    for h in range(HEADS):
        sl = slice(h * d, (h + 1) * d)
        aggregation = (agents[..., sl] @ k[..., sl].transpose(1, 2) / d**0.5).softmax(-1)
        broadcast = (q[..., sl] @ agents[..., sl].transpose(1, 2) / d**0.5).softmax(-1)
        outs.append(broadcast @ (aggregation @ v[..., sl]))
    return module.proj(torch.cat(outs, -1))


def test_2d_agents_are_block_means_of_queries():
    module = make(agent_num=4, dwc_kernel=0)  # 2 x 2 agents on a 4 x 6 map: 2 x 3 blocks
    x = torch.randn(2, 24, DIM, dtype=torch.float64)

    def block_means(q):
        q = q.view(2, 4, 6, DIM)
        return torch.stack(
            [q[:, 2 * i : 2 * i + 2, 3 * j : 3 * j + 3].mean((1, 2)) for i in range(2) for j in range(2)], 1
        )

    with torch.no_grad():
        torch.testing.assert_close(module(x, hw=(4, 6)), explicit_agent_attention(module, x, block_means))


def test_1d_agents_are_segment_means_of_queries():
    module = make(agent_num=3, dwc_kernel=0)
    x = torch.randn(2, 12, DIM, dtype=torch.float64)

    def segment_means(q):
        return torch.stack([q[:, 4 * i : 4 * i + 4].mean(1) for i in range(3)], 1)

    with torch.no_grad():
        torch.testing.assert_close(module(x), explicit_agent_attention(module, x, segment_means))


def test_dwc_term_is_a_depthwise_conv_of_v():
    with_dwc, without = make(agent_num=4), make(agent_num=4, dwc_kernel=0)
    without.load_state_dict({k: v for k, v in with_dwc.state_dict().items() if not k.startswith("dwc")})
    x = torch.randn(1, 16, DIM, dtype=torch.float64)
    with torch.no_grad():
        v = with_dwc.qkv(x)[..., 2 * DIM :]
        conv = with_dwc.dwc(v.transpose(1, 2).reshape(1, DIM, 4, 4)).flatten(2).transpose(1, 2)
        expected = without(x, hw=(4, 4)) + conv @ with_dwc.proj.weight.T
        torch.testing.assert_close(with_dwc(x, hw=(4, 4)), expected)


@pytest.mark.parametrize("hw", [None, (3, 5)])
def test_shapes_and_finite_grads(hw):
    module = make(agent_num=4)
    x = torch.randn(2, 15, DIM, dtype=torch.float64, requires_grad=True)
    out = module(x, hw=hw)
    assert out.shape == (2, 15, DIM)
    assert_finite_grads(module, out, x)


@pytest.mark.parametrize("hw", [None, (4, 5)])
def test_mask_honoured(hw):
    module = make(agent_num=4)
    x = torch.randn(2, 20, DIM, dtype=torch.float64)
    assert_mask_honoured(module, x, padding_mask(2, 20, [20, 13]), hw=hw)


def test_errors_and_registry():
    module = make(agent_num=5)
    x = torch.randn(1, 12, DIM, dtype=torch.float64)
    module(x)  # any agent count works on a 1-D token layout
    with pytest.raises(ValueError):
        module(x, hw=(3, 4))  # 5 agents cannot form a square grid
    with pytest.raises(ValueError):
        module(x, hw=(3, 5))
    with pytest.raises(ConfigError):
        AgentAttention(DIM, HEADS, dwc_kernel=2)
    caps = capabilities("agent")
    assert not caps.causal and caps.mask and caps.cost == "N" and caps.token_mixer
    with pytest.raises(ConfigError):
        build("agent", DIM, HEADS, causal=True)
