"""Two-stage query selection (Deformable DETR proposals + DINO's mixed query selection)."""

from __future__ import annotations

import math

import torch
from torch import nn

from common.detection.decoder import MLP
from common.detection.encoder import MultiScaleTokens


def encoder_proposals(tokens: MultiScaleTokens, base_size: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """One anchor box per token: centred on the token, side base_size * 2**level (of the unpadded image).

    Returns (proposals_unsigmoid [B, N, 4], usable [B, N] bool); padding tokens and anchors too close to the
    border (outside (0.01, 0.99)) are not usable, as in Deformable DETR.
    """
    centres = tokens.token_centres()
    sizes = base_size * 2.0 ** tokens.token_levels().to(centres)  # [N]
    proposals = torch.cat([centres, sizes[None, :, None].expand(centres.shape[0], -1, 2)], -1)
    usable = ((proposals > 0.01) & (proposals < 0.99)).all(-1) & ~tokens.padding
    return torch.log(proposals / (1 - proposals)).masked_fill(~usable[..., None], float("inf")), usable


class TwoStageQuerySelection(nn.Module):
    """Score every encoder token with a class head, take the top-k as the decoder's initial boxes.

    The memory goes through Linear + LayerNorm; a class head gives per-token logits and a box head a delta
    on the token's anchor (`encoder_proposals`). The `num_queries` tokens with the highest max-class logit
    become the reference boxes (detached), and the content queries are learnt embeddings (DINO's mixed
    query selection: positions from the encoder, content static).

    forward(memory, tokens) -> dict with
        `content` [B, Q, D], `reference_unsigmoid` [B, Q, 4] (detached),
        `enc_outputs` {pred_logits [B, Q, C], pred_boxes [B, Q, 4]} of the selected proposals (for the loss).
    """

    def __init__(self, dim: int, num_classes: int, num_queries: int):
        super().__init__()
        self.num_queries = num_queries
        self.memory_proj = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.class_head = nn.Linear(dim, num_classes)
        self.box_head = MLP(dim, dim, 4, 3)
        self.content = nn.Embedding(num_queries, dim)
        prior = 0.01  # focal-loss prior: start predicting "nothing" (RetinaNet)
        nn.init.constant_(self.class_head.bias, -math.log((1 - prior) / prior))
        nn.init.zeros_(self.box_head.layers[-1].weight)
        nn.init.zeros_(self.box_head.layers[-1].bias)

    def project(self, memory: torch.Tensor, usable: torch.Tensor) -> torch.Tensor:
        """Linear + LN of the memory with unusable tokens zeroed first."""
        return self.memory_proj(memory.masked_fill(~usable[..., None], 0.0))

    def forward(self, memory: torch.Tensor, tokens: MultiScaleTokens) -> dict:
        proposals, usable = encoder_proposals(tokens)
        projected = self.project(memory, usable)
        logits = self.class_head(projected)
        boxes_unsigmoid = self.box_head(projected) + proposals
        score = logits.max(-1).values.masked_fill(~usable, float("-inf"))
        k = min(self.num_queries, score.shape[1])
        index = score.topk(k, dim=1).indices  # [B, k]
        picked_boxes = boxes_unsigmoid.gather(1, index[..., None].expand(-1, -1, 4))
        picked_logits = logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))
        content = self.content.weight[None, :k].expand(memory.shape[0], -1, -1)
        return {
            "content": content,
            "reference_unsigmoid": picked_boxes.detach(),
            "enc_outputs": {"pred_logits": picked_logits, "pred_boxes": picked_boxes.sigmoid()},
        }
