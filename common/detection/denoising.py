"""Contrastive denoising (DINO's CDN): noised copies of the ground truth as extra decoder queries.

Each group holds a positive and a negative copy of every target of the image: positives get small box
noise (corner shifts below half the box size) and must reconstruct their target; negatives get larger
noise (between one and two half-sizes) and must predict "no object", which teaches the decoder to reject
near-misses. Labels are flipped to a random class with probability `label_noise_ratio / 2`.

Layout of the Ndn denoising queries (they come first, before the Q matching queries):
    group g occupies [g * 2M, (g + 1) * 2M), M = the most targets any image of the batch has;
    inside a group, the positive copy of target j sits at j and its negative copy at M + j;
    slots past an image's own target count are padding (zero content, a centred box) and stay unmatched.
`dn_meta` = {"pad_size": Ndn, "num_groups": G, "group_size": 2M, "max_targets": M} is what the criterion
(`common.detection.criterion.dn_indices`) and the detector (split at pad_size) need.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import box_convert

from common.errors import check_range


def denoising_attention_mask(num_groups: int, group_size: int, num_queries: int, device=None) -> torch.Tensor:
    """Bool [Ndn + Q, Ndn + Q], True = blocked.

    Matching queries never see denoising queries (they would read the answer off the noised ground truth);
    a denoising group sees only itself and the matching queries (DINO: a group may look at the matching
    queries, not the other way round, and groups never see each other)."""
    pad = num_groups * group_size
    mask = torch.zeros(pad + num_queries, pad + num_queries, dtype=torch.bool, device=device)
    mask[pad:, :pad] = True
    group_of = torch.arange(pad, device=device) // group_size
    mask[:pad, :pad] = group_of[:, None] != group_of[None, :]
    return mask


class ContrastiveDenoising(nn.Module):
    """Builds the denoising queries, their attention mask and `dn_meta` from a batch's targets.

    Args:
        num_classes: categories C; noised labels are embedded by an `nn.Embedding(C, hidden_dim)`.
        hidden_dim: query width D.
        num_dn_queries: budget of denoising queries: G = max(1, num_dn_queries // (2M)) groups of 2M queries
            (DINO's 100).
        label_noise_ratio: a label is replaced by a random class with probability label_noise_ratio / 2.
        box_noise_scale: lambda of the box noise (corner shifts in units of half the box size).

    forward(targets, num_queries) -> (content [B,Ndn,D], boxes_unsigmoid [B,Ndn,4], attn_mask bool
    [Ndn+Q, Ndn+Q] True = blocked, dn_meta), or (None, None, None, None) in eval mode or when no image of
    the batch has a target.
    """

    def __init__(
        self,
        num_classes: int,
        hidden_dim: int,
        num_dn_queries: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
    ):
        super().__init__()
        check_range("num_dn_queries", num_dn_queries, 1)
        check_range("label_noise_ratio", label_noise_ratio, 0.0, 1.0)
        check_range("box_noise_scale", box_noise_scale, 0.0)
        self.num_classes, self.hidden_dim = num_classes, hidden_dim
        self.num_dn_queries, self.label_noise_ratio, self.box_noise_scale = (
            num_dn_queries,
            label_noise_ratio,
            box_noise_scale,
        )
        self.label_embed = nn.Embedding(num_classes, hidden_dim)

    def idle_term(self) -> torch.Tensor:
        """0, computed from the label embedding: added to the queries of a training batch without targets (no
        denoising queries), so the embedding still takes part in the graph. DDP's reducer expects a gradient for
        every parameter on every rank each step; this gives it an exact zero for the price of one sum, where
        `find_unused_parameters` would search the whole autograd graph on every step of every batch."""
        return self.label_embed.weight.sum() * 0.0

    def noised_labels(self, labels: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(labels.shape, device=labels.device) < self.label_noise_ratio * 0.5
        random = torch.randint_like(labels, 0, self.num_classes)
        return torch.where(flip, random, labels)

    def noised_boxes(self, boxes: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Shift each corner by u * (w/2, h/2) * scale, |u| in [0, 1) for positives and [1, 2) for negatives."""
        if self.box_noise_scale == 0:
            return boxes
        half_wh = boxes[:, 2:].repeat(1, 2) / 2
        sign = torch.randint(0, 2, boxes.shape, device=boxes.device).to(boxes.dtype) * 2 - 1
        magnitude = torch.rand_like(boxes) + negative[:, None].to(boxes.dtype)
        xyxy = box_convert(boxes, "cxcywh", "xyxy") + sign * magnitude * half_wh * self.box_noise_scale
        return box_convert(xyxy.clamp(0.0, 1.0), "xyxy", "cxcywh")

    def forward(self, targets: list[dict], num_queries: int):
        counts = [len(t["boxes"]) for t in targets]
        if not self.training or not counts or max(counts) == 0:
            return None, None, None, None
        device = self.label_embed.weight.device
        batch, most = len(targets), max(counts)
        group_size = 2 * most
        groups = max(1, self.num_dn_queries // group_size)
        pad = groups * group_size

        # Every (group, polarity, image, target) copy, flattened, with the slot it fills.
        labels = torch.cat([t["labels"] for t in targets]).to(device)
        boxes = torch.cat([t["boxes"] for t in targets]).to(device).float()
        image = torch.repeat_interleave(torch.arange(batch, device=device), torch.tensor(counts, device=device))
        index_in_image = torch.cat([torch.arange(n, device=device) for n in counts])
        copies = 2 * groups
        negative = (torch.arange(copies, device=device) % 2).repeat_interleave(len(labels))
        group = (torch.arange(copies, device=device) // 2).repeat_interleave(len(labels))
        slot = group * group_size + negative * most + index_in_image.repeat(copies)
        image = image.repeat(copies)

        content = torch.zeros(batch, pad, self.hidden_dim, device=device)
        content[image, slot] = self.label_embed(self.noised_labels(labels.repeat(copies)))
        box_queries = torch.zeros(batch, pad, 4, device=device)  # padding: logit 0 = a centred half-size box
        box_queries[image, slot] = torch.logit(self.noised_boxes(boxes.repeat(copies, 1), negative.bool()), eps=1e-3)

        attn_mask = denoising_attention_mask(groups, group_size, num_queries, device)
        dn_meta = {"pad_size": pad, "num_groups": groups, "group_size": group_size, "max_targets": most}
        return content, box_queries, attn_mask, dn_meta
