"""FlowAttention: Flowformer's linear attention from flow conservation (competition + allocation)."""

from __future__ import annotations

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import check_range


def flow_quantities(
    q: torch.Tensor, k: torch.Tensor, causal: bool = False, mask: torch.Tensor | None = None, eps: float = 1e-6
) -> dict[str, torch.Tensor]:
    """The flows of Flow-Attention (Wu et al., ICML 2022), in linear time.

    With non-negative phi = sigmoid, sinks are queries and sources are keys (flow capacity phi(q_i).phi(k_j)):
        incoming I_i = phi(q_i) . sum_j phi(k_j)       (flow into sink i)
        outgoing O_j = phi(k_j) . sum_i phi(q_i)       (flow out of source j)
        conserved sink   I^_i = phi(q_i) . sum_j phi(k_j) / O_j   (sources' outflow fixed at 1)
        conserved source O^_j = phi(k_j) . sum_i phi(q_i) / I_i   (sinks' inflow fixed at 1)
        competition C_j = softmax_j(clamp(O^_j, -1, 1)) * S       (sources compete; mean weight 1)
        allocation  a_i = sigmoid(I^_i * L / S)                    (sinks' share of the output)
    with L sinks and S sources (the real tokens). Causal, as in the official causal code: every sum runs
    over positions <= the current one (so sink i counts sources j <= i, and source j, whose later sinks are
    not known at step j, counts sinks i <= j), each normalised by its count, and the competition softmax
    runs over sources <= j.

    Args:
        q, k: projected queries and keys (before phi).
        causal: causal flows.
        mask: optional bool [B, N], True = real token; padded tokens are neither sinks nor sources.
        eps: guards the divisions.

    Shapes:
        q, k: [B, H, N, D]. Returns a dict of phi_q, phi_k [B, H, N, D] and incoming, outgoing,
        conserved_sink, conserved_source, competition, allocation [B, H, N]; plus count [B, 1, N] (the
        number of real tokens at or before each position when causal, else all real tokens).
    """
    phi_q, phi_k = torch.sigmoid(q), torch.sigmoid(k)
    tokens = q.shape[2]
    if mask is None:
        real = torch.ones(q.shape[0], 1, tokens, dtype=q.dtype, device=q.device)
    else:
        real = mask[:, None, :].to(q.dtype)
        phi_q, phi_k = phi_q * real[..., None], phi_k * real[..., None]
    if causal:
        count = real.cumsum(-1).clamp(min=1.0)  # [B, 1, N]
        incoming = (phi_q * phi_k.cumsum(2)).sum(-1) + eps
        outgoing = (phi_k * phi_q.cumsum(2)).sum(-1) + eps
        conserved_sink = (phi_q * (phi_k * (count / outgoing)[..., None]).cumsum(2)).sum(-1) / count
        conserved_source = (phi_k * (phi_q * (count / incoming)[..., None]).cumsum(2)).sum(-1) / count
        conserved_source = conserved_source.clamp(-1.0, 1.0)
        allocation = torch.sigmoid(conserved_sink)
        # softmax over sources <= j; the clamp to [-1, 1] keeps exp in range
        weights = torch.exp(conserved_source) * real
        competition = weights / weights.cumsum(-1).clamp(min=torch.finfo(q.dtype).tiny) * count
    else:
        count = real.sum(-1, keepdim=True).clamp(min=1.0).expand(-1, -1, tokens)
        incoming = (phi_q * phi_k.sum(2, keepdim=True)).sum(-1) + eps
        outgoing = (phi_k * phi_q.sum(2, keepdim=True)).sum(-1) + eps
        conserved_sink = (phi_q * (phi_k / outgoing[..., None]).sum(2, keepdim=True)).sum(-1)
        conserved_source = (phi_k * (phi_q / incoming[..., None]).sum(2, keepdim=True)).sum(-1)
        conserved_source = conserved_source.clamp(-1.0, 1.0)
        allocation = torch.sigmoid(conserved_sink)  # L / S = 1 for self-attention
        logits = conserved_source.masked_fill(real == 0, float("-inf"))
        competition = logits.softmax(-1) * count
    return {
        "phi_q": phi_q,
        "phi_k": phi_k,
        "incoming": incoming,
        "outgoing": outgoing,
        "conserved_sink": conserved_sink,
        "conserved_source": conserved_source,
        "competition": competition,
        "allocation": allocation,
        "count": count,
    }


def flow_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    mask: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Flow-Attention: out_i = a_i * sum_j [phi(q_i).phi(k_j) / I_i] * C_j * v_j, in O(N D^2).

    See `flow_quantities` for the terms. Shapes: q, k [B, H, N, D]; v [B, H, N, Dv]; returns [B, H, N, Dv].
    """
    f = flow_quantities(q, k, causal=causal, mask=mask, eps=eps)
    q_norm = f["phi_q"] / f["incoming"][..., None]
    v_comp = v * f["competition"][..., None]
    if causal:
        state = torch.einsum("bhnd,bhne->bhnde", f["phi_k"], v_comp).cumsum(2)  # [B, H, N, D, Dv]
        out = torch.einsum("bhnd,bhnde->bhne", q_norm, state)
    else:
        out = q_norm @ (f["phi_k"].transpose(-2, -1) @ v_comp)
    return out * f["allocation"][..., None]


class FlowAttention(Mechanism):
    """Flow-Attention: linear attention without locality bias, from flow-network conservation.

    Paper: "Flowformer: Linearizing Transformers with Conservation Flows", Wu et al., ICML 2022
    (arXiv 2202.06258). Attention is information flow from sources (values, capacities phi(k)) to sinks
    (results, phi(q)) with phi = sigmoid. Fixing each sink's incoming flow at 1 makes sources compete
    (softmax over their conserved outgoing flow, re-weighting values); fixing each source's outgoing flow
    at 1 decides how much each sink receives (sigmoid of its conserved incoming flow, gating results).
    See `flow_quantities` for the formulas.

    Cost: O(N D^2) per head, linear in N ("N"); the causal form keeps a running D x Dv state per position
    (this reference materialises it, O(N D Dv) memory).

    Choices (as in the official code, thuml/Flowformer): the conserved source flow is clamped to [-1, 1]
    before the competition softmax "for stability"; competition is scaled by the number of sources so its
    mean is 1; the causal form normalises every running sum by its count and runs the competition softmax
    over sources <= j. `eps` guards divisions. Key-padding masks remove padded tokens as both sinks and
    sources (self-attention), so real outputs do not depend on them.

    Args:
        dim: model width C.
        num_heads: heads (C divisible by it).
        causal: causal Flow-Attention.
        eps: division guard.
        qkv_bias: bias in the qkv projection.

    Shapes:
        x: [B, N, C]; mask: optional bool [B, N], True = real token; returns [B, N, C].
    """

    capabilities = Capabilities(
        paper="Flowformer: Linearizing Transformers with Conservation Flows (ICML 2022, arXiv 2202.06258)",
        causal=True,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N",
        token_mixer=True,
        qkv_bias=True,
    )

    def __init__(self, dim: int, num_heads: int, causal: bool = False, eps: float = 1e-6, qkv_bias: bool = True):
        super().__init__(num_heads, dim=dim)
        check_range("eps", eps, 0.0, low_inclusive=False)
        self.head_dim, self.causal, self.eps = dim // num_heads, causal, eps
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, channels = x.shape
        q, k, v = self.split_heads(self.qkv(x))
        out = flow_attention(q, k, v, causal=self.causal, mask=mask, eps=self.eps)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))
