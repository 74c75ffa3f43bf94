"""AgentAttention: agent tokens pooled from the queries aggregate, then broadcast (two softmax attentions) + DWC."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import ConfigError, check_range


class AgentAttention(Mechanism):
    """Agent attention: softmax attention through a small set of agent tokens, plus a depth-wise conv on V.

    Paper: "Agent Attention: On the Integration of Softmax and Linear Attention", Han et al., ECCV 2024
    (arXiv 2312.08874). With queries Q, keys K, values V and n agent tokens A = pool(Q):
        agent aggregation: V_A = softmax(A K^T / sqrt(d)) V              [n x d per head]
        agent broadcast:   O   = softmax(Q A^T / sqrt(d)) V_A             [N x d per head]
        output:            proj(O + DWC(V))
    Both steps go through `scaled_dot_product_attention`. Non-causal (the agents summarise all tokens).

    Cost: O(N n d) per head with n agents fixed ("N"), plus the O(N C k^2) depth-wise conv.

    Choices where the paper leaves details open or the official code is tied to fixed window sizes:
        - Agents are the adaptive average pool of the query map: with `hw=(H, W)` the map is pooled to a
          sqrt(n) x sqrt(n) grid (`agent_num` must then be a perfect square; 49 = 7 x 7 as in the paper);
          without `hw` the tokens are treated as a 1 x N map and pooled to 1 x n.
        - DWC: one depth-wise Conv2d (kernel `dwc_kernel`, 3 in the paper) on the V map; on a 1 x N map only
          its middle row touches data (a 1-D depth-wise conv).
        - The official agent/position biases (sized for one fixed window and agent grid) are left out; no
          class-token special case (apps with a class token pass it outside the map).
        - With a key-padding mask: agents pool only real queries (masked average), padded keys are masked
          out of the agent aggregation, and padded values are zeroed before the DWC, so real outputs do not
          depend on padded tokens.

    Args:
        dim: model width C.
        num_heads: heads (C divisible by it).
        agent_num: number of agent tokens n.
        dwc_kernel: kernel of the depth-wise conv on V (odd; 0 disables it).
        qkv_bias: bias in the qkv projection.

    Shapes:
        x: [B, N, C]; mask: optional bool [B, N], True = real token; hw: optional (H, W) with H * W = N;
        returns [B, N, C].
    """

    capabilities = Capabilities(
        paper="Agent Attention: On the Integration of Softmax and Linear Attention (ECCV 2024, arXiv 2312.08874)",
        causal=False,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N",
        token_mixer=True,
        qkv_bias=True,
    )

    def __init__(self, dim: int, num_heads: int, agent_num: int = 49, dwc_kernel: int = 3, qkv_bias: bool = True):
        super().__init__(num_heads, dim=dim)
        check_range("agent_num", agent_num, 1)
        check_range("dwc_kernel", dwc_kernel, 0)
        if dwc_kernel and dwc_kernel % 2 == 0:
            raise ConfigError("dwc_kernel", dwc_kernel, "0 or an odd kernel size")
        self.head_dim, self.agent_num = dim // num_heads, agent_num
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.dwc = nn.Conv2d(dim, dim, dwc_kernel, padding=dwc_kernel // 2, groups=dim) if dwc_kernel else None
        self.proj = nn.Linear(dim, dim)

    def _agent_grid(self, hw: tuple[int, int] | None) -> tuple[int, int]:
        if hw is None:
            return 1, self.agent_num
        side = math.isqrt(self.agent_num)
        if side * side != self.agent_num:
            raise ValueError(f"agent_num={self.agent_num} must be a perfect square for a 2-D map (hw given)")
        return side, side

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, hw: tuple[int, int] | None = None
    ) -> torch.Tensor:
        batch, tokens, channels = x.shape
        height, width = (1, tokens) if hw is None else hw
        if height * width != tokens:
            raise ValueError(f"hw={tuple(hw)} gives {height * width} tokens, x has {tokens}")
        grid = self._agent_grid(hw)
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # [B, N, C] each

        def to_map(t: torch.Tensor) -> torch.Tensor:
            return t.transpose(1, 2).reshape(batch, t.shape[-1], height, width)

        if mask is None:
            agents = F.adaptive_avg_pool2d(to_map(q), grid)
        else:
            weight = mask.to(q.dtype)[:, :, None]
            v = v * weight
            pooled_weight = F.adaptive_avg_pool2d(to_map(weight), grid)
            agents = F.adaptive_avg_pool2d(to_map(q * weight), grid) / pooled_weight.clamp(min=1e-6)
        agents = agents.flatten(2).transpose(1, 2)  # [B, n, C]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        key_mask = None if mask is None else mask[:, None, None, :]
        agent_v = F.scaled_dot_product_attention(
            heads(agents), heads(k), heads(v), attn_mask=key_mask, scale=self.scale
        )
        out = F.scaled_dot_product_attention(heads(q), heads(agents), agent_v, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, tokens, channels)
        if self.dwc is not None:
            out = out + self.dwc(to_map(v)).flatten(2).transpose(1, 2)
        return self.proj(out)
