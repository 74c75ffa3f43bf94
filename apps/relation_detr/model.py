"""Relation-DETR (Hou et al., "Relation DETR: Exploring Explicit Position Relation Prior for Object
Detection", ECCV 2024, arXiv 2407.11699) on the shared DINO-style detector.

What it adds to `common.detection.detector.DINODetector`:
- the position relation encoder (`relation.PositionRelationEncoder`): from layer 1 on, each decoder layer's
  self-attention gets an additive per-head bias computed from the boxes before and after the previous
  layer (progressive attention refinement); `use_relation=False` gives the same model without it;
- memory fusion in the encoder: the input tokens and every encoder layer's output are concatenated and
  fused (Linear -> ReLU -> Linear -> LayerNorm) into the memory;
- the hybrid ("contrastive relation") branch, training only: a second query set with its own two-stage
  selection heads and content embeddings runs through the same decoder *without* the relation bias and
  is supervised one-to-many (see `criterion.HybridSetCriterion`); eval, export and predict never build it.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from apps.relation_detr.relation import PositionRelationEncoder
from common.attention.softmax import softmax_attention
from common.detection.decoder import BiasFn, DeformableDecoder, QuerySelfAttention
from common.detection.detector import DINODetector
from common.detection.encoder import DeformableEncoder, MultiScaleTokens
from common.detection.query_selection import TwoStageQuerySelection
from common.errors import check_range


class MemoryFusionEncoder(DeformableEncoder):
    """Deformable encoder whose memory fuses the input and all layer outputs: concat (L + 1) * D features ->
    Linear -> ReLU -> Linear -> LayerNorm (Relation-DETR's encoder)."""

    def __init__(self, num_layers=6, dim=256, **kw):
        super().__init__(num_layers=num_layers, dim=dim, **kw)
        self.fusion = nn.Sequential(
            nn.Linear((num_layers + 1) * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.LayerNorm(dim)
        )

    def forward(self, tokens: MultiScaleTokens, **_) -> tuple[torch.Tensor, dict]:
        x, ref = tokens.src, tokens.reference_points()
        outputs = [x]
        for layer in self.layers:
            x = layer(x, tokens.pos, ref, x, tokens)
            outputs.append(x)
        return self.fusion(torch.cat(outputs, -1)), {}


class BiasedQuerySelfAttention(QuerySelfAttention):
    """The decoder's query self-attention through the core's explicit softmax path (same math).

    Why: with a float bias, SDPA's decomposition for ONNX yields an output whose strides the following
    flatten cannot view (torch 2.14), so the relation model would only export as model.pt2; the explicit
    path (q k^T * scale + bias, softmax, @ v) exports to ONNX.
    """

    def forward(self, x: torch.Tensor, pos: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        qk = x + pos
        q, k, v = self._heads(self.q(qk)), self._heads(self.k(qk)), self._heads(self.v(x))
        out, _ = softmax_attention(q, k, v, bias=bias, return_weights=True)
        return self.out(out.transpose(1, 2).flatten(2))


class RelationDETR(DINODetector):
    """DINO-style detector + position relation bias + memory fusion + hybrid one-to-many branch.

    Args (besides `DINODetector`'s):
        use_relation: add the position relation bias to the decoder's self-attention (False: the ablation).
        relation_feats, relation_temperature, relation_scale: the relation's sine embedding (16, 1e4, 100).
        memory_fusion: fuse all encoder layers into the memory (the paper: on).
        num_hybrid_queries: queries of the hybrid branch (the paper: 1500; 0 turns the branch off).

    forward_train adds `hybrid_outputs` ({pred_logits, pred_boxes, aux_outputs, enc_outputs}) to the base
    dict while training; `forward` is the base one (main queries only).
    """

    def __init__(
        self,
        num_classes: int,
        class_names: list[str] | None = None,
        use_relation: bool = True,
        relation_feats: int = 16,
        relation_temperature: float = 10000.0,
        relation_scale: float = 100.0,
        memory_fusion: bool = True,
        num_hybrid_queries: int = 1500,
        **kwargs,
    ):
        check_range("num_hybrid_queries", num_hybrid_queries, 0)
        super().__init__(
            num_classes,
            class_names,
            encoder=MemoryFusionEncoder if memory_fusion else DeformableEncoder,
            decoder=partial(DeformableDecoder, attn_layer=BiasedQuerySelfAttention),  # export-friendly, same math
            **kwargs,
        )
        self.use_relation = use_relation
        self.relation = (
            PositionRelationEncoder(self.num_heads, relation_feats, relation_temperature, relation_scale)
            if use_relation
            else None
        )
        self.hybrid_selection = (
            TwoStageQuerySelection(self.hidden_dim, num_classes, num_hybrid_queries) if num_hybrid_queries else None
        )

    def decoder_bias_fn(self) -> BiasFn | None:
        """Layer 0 has no earlier boxes: no bias. Layer i > 0: relation(boxes into layer i-1, boxes out of it)."""
        if self.relation is None:
            return None

        def bias(layer: int, previous: torch.Tensor | None, current: torch.Tensor) -> torch.Tensor | None:
            return None if previous is None else self.relation(previous, current)

        return bias

    def run(self, images: torch.Tensor, masks: torch.Tensor | None, targets: list[dict] | None = None) -> dict:
        out = super().run(images, masks, targets)
        if targets is not None and self.training and self.hybrid_selection is not None:
            memory, tokens = out["memory"], out["tokens"]
            selected = self.hybrid_selection(memory, tokens)
            # Same decoder, no relation bias and no denoising: the one-to-many queries are meant to
            # duplicate each other, which the relation prior (built to suppress duplicates) would fight.
            logits, boxes = self.decode(selected["content"], selected["reference_unsigmoid"], memory, tokens)
            hybrid = self.layer_outputs(logits, boxes)
            hybrid["enc_outputs"] = selected["enc_outputs"]
            out["hybrid_outputs"] = hybrid
        return out
