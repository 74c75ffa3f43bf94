"""HedgehogAttention: linear attention with trainable softmax-mimicking feature maps (Hedgehog)."""

from __future__ import annotations

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import check_range


class HedgehogFeatureMap(nn.Module):
    """Per-head trainable feature map phi(x) = [softmax(x W + b), softmax(-(x W + b))] over the feature axis.

    A single linear layer per head (the paper's "MLP") followed by exp of +- the projection, normalised over
    features (the softmax form of the exp activation, as in the authors' released feature maps). The
    normalisation is per token and the features are strictly positive, so phi(q).phi(k) > 0.

    Args:
        num_heads: heads H.
        head_dim: input width D.
        feature_dim: width F of the projection; phi has 2F features. Default D.

    Shapes:
        x: [B, H, N, D]; returns [B, H, N, 2F].
    """

    def __init__(self, num_heads: int, head_dim: int, feature_dim: int | None = None):
        super().__init__()
        feature_dim = head_dim if feature_dim is None else feature_dim
        self.weight = nn.Parameter(torch.empty(num_heads, head_dim, feature_dim))
        self.bias = nn.Parameter(torch.zeros(num_heads, feature_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity init when F = D (phi starts as softmax(+-x)), else Kaiming-uniform per head; zero bias."""
        with torch.no_grad():
            heads, head_dim, feature_dim = self.weight.shape
            if head_dim == feature_dim:
                self.weight.copy_(torch.eye(head_dim).expand(heads, -1, -1))
            else:
                for w in self.weight:
                    nn.init.kaiming_uniform_(w.T, a=5**0.5)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.einsum("bhnd,hdf->bhnf", x, self.weight) + self.bias[None, :, None, :]
        return torch.cat([z.softmax(-1), (-z).softmax(-1)], dim=-1)


class HedgehogAttention(Mechanism):
    """Linear attention whose feature maps are trained to mimic softmax attention (Hedgehog).

    Paper: "The Hedgehog & the Porcupine: Expressive Linear Attentions with Softmax Mimicry", Zhang et al.,
    ICLR 2024 (arXiv 2402.04347). Weights a_ij = phi_q(q_i).phi_k(k_j) / sum_m phi_q(q_i).phi_k(k_m) with
    per-head trainable feature maps (`HedgehogFeatureMap`) whose exp(+-) activations keep the weights spiky
    and monotonic in q.k; the maps are trained with `distillation_loss` (cross-entropy between the softmax
    weights of the same q, k and these weights), then the layer runs as linear attention.

    Cost: O(N F D) per head ("N"); the causal form keeps a running F x D state per position (this
    reference materialises it with a cumulative sum, O(N F D) memory).

    Choices where the paper leaves details open:
        - Separate maps for q and k (`tie_qk=False`), one linear layer each, identity-initialised (phi starts
          as softmax(+-x)); F = head dim by default.
        - The maps see the raw projected q, k; the softmax teacher uses scale 1/sqrt(D).
        - The loss is the soft-label cross-entropy -sum_j p_ij log a_ij, averaged over real query rows (heads
          and batch); subtracting the teacher's entropy would give the KL divergence, same gradient.
        - Key-padding masks zero phi_k of padded keys; causal runs as prefix sums.

    Args:
        dim: model width C.
        num_heads: heads (C divisible by it).
        feature_dim: projection width F of the feature maps (phi has 2F features).
        causal: causal linear attention.
        tie_qk: one feature map for q and k.
        eps: guard for the normaliser.
        qkv_bias: bias in the qkv projection.

    Shapes:
        x: [B, N, C]; mask: optional bool [B, N], True = real token; returns [B, N, C].
    """

    capabilities = Capabilities(
        paper="The Hedgehog & the Porcupine: Expressive Linear Attentions with Softmax Mimicry (ICLR 2024, "
        "arXiv 2402.04347)",
        causal=True,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N",
        token_mixer=True,
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        feature_dim: int | None = None,
        causal: bool = False,
        tie_qk: bool = False,
        eps: float = 1e-6,
        qkv_bias: bool = True,
    ):
        super().__init__(num_heads, dim=dim)
        if feature_dim is not None:
            check_range("feature_dim", feature_dim, 1)
        check_range("eps", eps, 0.0, low_inclusive=False)
        self.head_dim, self.causal, self.eps = dim // num_heads, causal, eps
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.feature_q = HedgehogFeatureMap(num_heads, self.head_dim, feature_dim)
        self.feature_k = self.feature_q if tie_qk else HedgehogFeatureMap(num_heads, self.head_dim, feature_dim)

    def feature_map_parameters(self) -> list[nn.Parameter]:
        """The feature maps' parameters (what distillation trains, with the rest frozen)."""
        return list({id(p): p for m in (self.feature_q, self.feature_k) for p in m.parameters()}.values())

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.split_heads(self.qkv(x))  # each [B, H, N, D]

    def _allowed(self, mask: torch.Tensor | None, tokens: int, device: torch.device) -> torch.Tensor | None:
        allowed = None if mask is None else mask[:, None, None, :]
        if self.causal:
            tril = torch.ones(tokens, tokens, dtype=torch.bool, device=device).tril()
            allowed = tril if allowed is None else allowed & tril
        return allowed

    def attention_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The explicit Hedgehog weights a_ij (quadratic; for distillation and inspection).

        Shapes: x [B, N, C]; mask optional bool [B, N]; returns [B, H, N, N], rows summing to one.
        """
        q, k, _ = self._qkv(x)
        scores = self.feature_q(q) @ self.feature_k(k).transpose(-2, -1)
        allowed = self._allowed(mask, x.shape[1], x.device)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, 0.0)
        return scores / scores.sum(-1, keepdim=True).clamp(min=self.eps)

    def softmax_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The softmax attention weights of the same q, k (the distillation teacher).

        Shapes: x [B, N, C]; mask optional bool [B, N]; returns [B, H, N, N].
        """
        q, k, _ = self._qkv(x)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        allowed = self._allowed(mask, x.shape[1], x.device)
        if allowed is None:
            return logits.softmax(-1)
        # a query without any visible key (padded, under a causal mask) gets an all-zero row instead of NaN
        logits = logits.masked_fill(~allowed, float("-inf")).masked_fill(~allowed.any(-1, keepdim=True), 0.0)
        return logits.softmax(-1) * allowed

    def distillation_loss(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of the Hedgehog weights against the (detached) softmax weights, a scalar.

        loss = mean over real query rows of -sum_j p_ij log a_ij, with p the softmax teacher.
        Shapes: x [B, N, C]; mask optional bool [B, N]; returns [].
        """
        teacher = self.softmax_weights(x, mask).detach()
        student = self.attention_weights(x, mask)
        per_row = -(teacher * student.clamp(min=torch.finfo(student.dtype).tiny).log()).sum(-1)  # [B, H, N]
        if mask is None:
            return per_row.mean()
        rows = mask[:, None, :].expand_as(per_row)
        return per_row[rows].mean()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, channels = x.shape
        q, k, v = self._qkv(x)
        phi_q, phi_k = self.feature_q(q), self.feature_k(k)
        if mask is not None:
            phi_k = phi_k * mask[:, None, :, None].to(phi_k.dtype)
        if self.causal:
            state = torch.einsum("bhnf,bhnd->bhnfd", phi_k, v).cumsum(2)  # [B, H, N, 2F, D]
            num = torch.einsum("bhnf,bhnfd->bhnd", phi_q, state)
            den = (phi_q * phi_k.cumsum(2)).sum(-1, keepdim=True)
        else:
            num = phi_q @ (phi_k.transpose(-2, -1) @ v)
            den = phi_q @ phi_k.sum(2, keepdim=True).transpose(-2, -1)
        out = num / den.clamp(min=self.eps)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))


__all__ = ["HedgehogAttention", "HedgehogFeatureMap"]
