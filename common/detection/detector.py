"""A DINO-style detector (Zhang et al., "DINO: DETR with Improved DeNoising Anchor Boxes", ICLR 2023) that
the DETR variants subclass: backbone -> channel mapper -> sine positions -> encoder -> two-stage query
selection -> (contrastive denoising) -> deformable decoder with per-layer heads.

A variant says what it builds through two constructor arguments, and overrides small hooks for what it runs:
    `encoder=`           factory of the encoder (Focus-DETR: the foreground-selecting sparse encoder with its
                         options bound; Relation-DETR: the memory-fusion encoder);
    `decoder=`           factory of the decoder (Relation-DETR: its export-friendly self-attention class bound);
    `encode(tokens)`     memory + extra outputs (Focus-DETR: foreground scores for its select loss);
    `decoder_bias_fn()`  per-layer self-attention bias from the boxes (Relation-DETR's position relation);
    `decode(...)`        one query set through the decoder (Relation-DETR runs its hybrid set through it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from common.detection.backbone import Backbone, ChannelMapper
from common.detection.decoder import BiasFn, DeformableDecoder
from common.detection.denoising import ContrastiveDenoising
from common.detection.encoder import DeformableEncoder, MultiScaleTokens, flatten_levels
from common.detection.position import LevelEmbedding, sine_position_embedding
from common.detection.query_selection import TwoStageQuerySelection
from common.detection.transforms import MEAN, STD, resize_shorter
from common.errors import ConfigError, check_range


class DINODetector(nn.Module):
    """DINO-style two-stage deformable DETR with contrastive denoising and look-forward-twice.

    Args:
        num_classes, class_names: from the data (`model_kwargs`).
        backbone: timm model name; out_indices: its stages used (ResNet (2, 3, 4) = strides 8, 16, 32);
            backbone_weights: optional local state dict; frozen_bn: FrozenBatchNorm in the backbone.
        num_levels: feature levels after the mapper (extra stride-2 levels added past the backbone's).
        hidden_dim, num_heads, num_points, ffn_dim, dropout: transformer sizes (the papers: 256, 8, 4, 2048, 0).
        num_encoder_layers, num_decoder_layers, num_queries: the papers: 6, 6, 900.
        num_dn_queries, label_noise_ratio, box_noise_scale: contrastive denoising (0 queries: off).
        image_size: the side of `example_inputs` (export traces a square; height and width stay dynamic) and
            predict's shorter side; max_size: predict's cap of the longer side (the data's eval_size / max_size).
        encoder: called as encoder(num_layers=, dim=, num_heads=, num_levels=, num_points=, ffn_dim=, dropout=)
            -> a module with forward(tokens, **context) -> (memory [B, N, D], extras dict);
        decoder: called as decoder(num_classes, num_layers=, and the same sizes) -> a `DeformableDecoder`.
            Both are for variants (code, not config); they are built in this order, after the backbone, the
            mapper and the level embedding, which fixes the seeded initialisation.

    forward(images [B, 3, H, W], masks [B, H, W] bool True = padding or None)
        -> (logits [B, Q, C] before the sigmoid, boxes [B, Q, 4] normalised cxcywh): the last decoder layer.
    forward_train(images, masks, targets) -> the criterion's dict (see common/detection/criterion.py).
    """

    TRAINING_METHOD = "forward_train"  # what compile=true compiles besides forward (the module trains through it)

    def __init__(
        self,
        num_classes: int,
        class_names: list[str] | None = None,
        backbone: str = "resnet50",
        backbone_weights: str | None = None,
        frozen_bn: bool = False,
        out_indices: tuple[int, ...] = (2, 3, 4),
        num_levels: int = 4,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        num_queries: int = 900,
        num_dn_queries: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        image_size: int = 128,
        max_size: int | None = None,
        encoder: Callable[..., nn.Module] = DeformableEncoder,
        decoder: Callable[..., nn.Module] = DeformableDecoder,
    ):
        super().__init__()
        check_range("num_classes", num_classes, 1)
        for key, value in (("num_encoder_layers", num_encoder_layers), ("num_decoder_layers", num_decoder_layers)):
            check_range(key, value, 1)
        check_range("num_queries", num_queries, 1)
        check_range("num_dn_queries", num_dn_queries, 0)
        if hidden_dim % num_heads:
            raise ConfigError("num_heads", num_heads, f"a divisor of hidden_dim={hidden_dim}")
        names = [str(c) for c in class_names] if class_names else [str(i) for i in range(num_classes)]
        if len(names) != num_classes:
            raise ConfigError("class_names", class_names, f"{num_classes} names (num_classes)")
        self.num_classes, self.class_names, self.image_size = int(num_classes), names, int(image_size)
        self.eval_size, self.max_size = self.image_size, None if max_size is None else int(max_size)
        self.hidden_dim, self.num_heads, self.num_queries = hidden_dim, num_heads, num_queries

        self.backbone = Backbone(backbone, out_indices, backbone_weights, frozen_bn)
        self.mapper = ChannelMapper(self.backbone.channels, hidden_dim, num_levels)
        self.level_embed = LevelEmbedding(num_levels, hidden_dim)
        layer_kw = dict(dim=hidden_dim, num_heads=num_heads, num_levels=num_levels, num_points=num_points)
        self.encoder = encoder(num_layers=num_encoder_layers, ffn_dim=ffn_dim, dropout=dropout, **layer_kw)
        self.query_selection = TwoStageQuerySelection(hidden_dim, num_classes, num_queries)
        self.decoder = decoder(num_classes, num_layers=num_decoder_layers, ffn_dim=ffn_dim, dropout=dropout, **layer_kw)
        self.denoising = (
            ContrastiveDenoising(num_classes, hidden_dim, num_dn_queries, label_noise_ratio, box_noise_scale)
            if num_dn_queries > 0
            else None
        )

    # ---- hooks for the variants ----
    def encode(self, tokens: MultiScaleTokens) -> tuple[torch.Tensor, dict]:
        """Memory and extra outputs; the two-stage class head is offered to encoders that score tokens."""
        return self.encoder(tokens, class_head=self.query_selection.class_head)

    def decoder_bias_fn(self) -> BiasFn | None:
        """Per-layer self-attention bias for the matching (and denoising) queries; none in DINO."""
        return None

    # ---- the pipeline ----
    def tokens(self, images: torch.Tensor, masks: torch.Tensor | None) -> MultiScaleTokens:
        """Backbone + mapper, then flatten with positions (sine of the unpadded grid + level embedding)."""
        padded = masks is not None
        if masks is None:
            masks = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device)
        levels = self.mapper(self.backbone(images))
        level_masks, pos = [], []
        for i, feat in enumerate(levels):
            m = F.interpolate(masks[:, None].float(), size=feat.shape[-2:]).to(torch.bool)[:, 0]
            level_masks.append(m)
            pos.append(sine_position_embedding(m, self.hidden_dim // 2) + self.level_embed(i)[None, :, None, None])
        return flatten_levels(levels, level_masks, pos, padded=padded)

    def decode(
        self,
        content: torch.Tensor,
        reference_unsigmoid: torch.Tensor,
        memory: torch.Tensor,
        tokens: MultiScaleTokens,
        self_attn_mask: torch.Tensor | None = None,
        bias_fn: BiasFn | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """One query set through the decoder: per-layer logits and boxes."""
        return self.decoder(content, reference_unsigmoid, memory, tokens, self_attn_mask, bias_fn)

    @staticmethod
    def layer_outputs(logits: list[torch.Tensor], boxes: list[torch.Tensor]) -> dict:
        """{pred_logits, pred_boxes, aux_outputs} from per-layer lists (DETR's output convention)."""
        return {
            "pred_logits": logits[-1],
            "pred_boxes": boxes[-1],
            "aux_outputs": [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(logits[:-1], boxes[:-1])],
        }

    def run(self, images: torch.Tensor, masks: torch.Tensor | None, targets: list[dict] | None = None) -> dict:
        tokens = self.tokens(images, masks)
        memory, extras = self.encode(tokens)
        selected = self.query_selection(memory, tokens)
        content, reference = selected["content"], selected["reference_unsigmoid"]
        dn = (None,) * 4
        if targets is not None and self.denoising is not None and self.training:
            dn = self.denoising(targets, content.shape[1])
        dn_content, dn_boxes, attn_mask, dn_meta = dn
        if dn_meta is not None:
            content = torch.cat([dn_content, content], 1)
            reference = torch.cat([dn_boxes, reference], 1)
        elif targets is not None and self.denoising is not None and self.training:  # a batch without targets
            content = content + self.denoising.idle_term()  # + exact 0: the embedding stays in the graph for DDP
        logits, boxes = self.decode(content, reference, memory, tokens, attn_mask, self.decoder_bias_fn())
        pad = dn_meta["pad_size"] if dn_meta is not None else 0
        out = self.layer_outputs([lg[:, pad:] for lg in logits], [bx[:, pad:] for bx in boxes])
        out["enc_outputs"] = selected["enc_outputs"]
        if dn_meta is not None:
            out["dn_outputs"] = self.layer_outputs([lg[:, :pad] for lg in logits], [bx[:, :pad] for bx in boxes])
            out["dn_meta"] = dn_meta
        out.update(extras)
        out["tokens"] = tokens  # variants' losses read token positions and levels from here
        out["memory"] = memory
        return out

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.run(images, masks)
        return out["pred_logits"], out["pred_boxes"]

    def forward_train(self, images: torch.Tensor, masks: torch.Tensor | None, targets: list[dict]) -> dict:
        return self.run(images, masks, targets)

    # ---- export ----
    def example_inputs(self) -> tuple[torch.Tensor]:
        """Two random normalised images [2, 3, S, S] (batch 2: the batch dim is exported as dynamic)."""
        g = torch.Generator().manual_seed(0)
        return (torch.randn(2, 3, self.image_size, self.image_size, generator=g),)

    def export_check_inputs(self) -> list[tuple[torch.Tensor]]:
        """What the export also checks the graph on: one image the size predict makes of a 3:2 landscape photo
        (shorter side S, e.g. 128 x 192), so the dynamic height and width are run at other values than traced."""
        h, w = resize_shorter(2, 3, self.image_size, self.max_size or 2 * self.image_size)
        return [(torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1)),)]

    def min_image_side(self) -> int:
        """The coarsest level's stride + 1: the traced graph needs every level at least 2 pixels high and wide."""
        return self.backbone.strides[-1] * 2 ** len(self.mapper.extra) + 1

    def export_spec(self) -> dict:
        q, c, side = self.num_queries, self.num_classes, self.min_image_side()
        return {
            "inputs": {
                "images": {"shape": ["B", 3, "H", "W"], "dtype": "float32", "min": {"H": side, "W": side}},
            },
            "outputs": {
                "logits": {"shape": ["B", q, c], "dtype": "float32"},
                "boxes": {"shape": ["B", q, 4], "dtype": "float32"},
            },
            "classes": list(self.class_names),
            "normalize": {"mean": list(MEAN), "std": list(STD), "range": "pixels / 255, then (x - mean) / std"},
            "preprocess": {"eval_size": self.eval_size, "max_size": self.max_size},
            "boxes": "normalised (cx, cy, w, h) of the input image; logits before the sigmoid",
        }
