"""Focus-DETR (Zheng et al., "Less is More: Focus Attention for Efficient DETR", ICCV 2023, arXiv 2307.12612).

A DINO detector whose encoder updates only the foreground tokens:
    - foreground token selector: a scorer (LN-Linear-GELU, local/global halves, MLP to one logit) applied
      level by level from the coarsest, each finer level's features modulated by the upsampled scores of
      the level above (top-down score modulation, learnt scale alpha per level);
    - cascade: the top K = int(rho * valid tokens) + 1 tokens by foreground score, and in encoder layer i the
      first K * cascade[i] of them (a shrinking budget);
    - dual attention per layer: the multi-category score (max class probability of the two-stage class head
      times the foreground probability) picks the `num_attn_tokens` fine-grained object tokens, which run
      softmax self-attention among themselves; then all kept tokens run deformable attention over the full
      map, and are scattered back — background tokens pass through untouched.
The decoder, two-stage selection and denoising are the shared DINO ones (`common.detection.detector`).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from common.detection.decoder import QuerySelfAttention
from common.detection.detector import DINODetector
from common.detection.encoder import DeformableEncoderLayer, MultiScaleTokens
from common.errors import ConfigError, check_range

PAPER_CASCADE = (1.0, 0.8, 0.6, 0.6, 0.4, 0.2)  # the official 6-layer keep schedule


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, N, ...], index [B, K] -> [B, K, ...]."""
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


def scatter_tokens(x: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """x with x[b, index[b, k]] = values[b, k] (out of place)."""
    return x.scatter(1, index[..., None].expand(-1, -1, x.shape[-1]), values)


class ForegroundScorer(nn.Module):
    """The official MaskPredictor: LN -> Linear -> GELU, half the channels kept per token (local), half
    averaged over the level's real tokens (global context), concatenated -> MLP h -> h/2 -> h/4 -> 1.

    Shapes: x [B, n, D], padding [B, n] bool -> foreground logits [B, n].
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        if hidden % 4:
            raise ConfigError("fg_hidden", hidden, "a multiple of 4")
        self.embed = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU())
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden // 2),
            nn.GELU(),
            nn.Linear(hidden // 2, hidden // 4),
            nn.GELU(),
            nn.Linear(hidden // 4, 1),
        )

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        local, glob = z.chunk(2, dim=-1)
        real = (~padding).to(z.dtype)[..., None]
        glob = (glob * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp(min=1)
        return self.head(torch.cat([local, glob.expand_as(local)], -1))[..., 0]


class ForegroundTokenSelector(nn.Module):
    """Foreground logits for every token, top-down across levels.

    The tokens go through Linear + LayerNorm (the paper scores the two-stage-style projected memory), then
    from the coarsest level down: level l's features are modulated by the bilinearly upsampled logits of
    level l+1, feat_l += feat_l * up(score_{l+1}) * alpha_l, before scoring (`ForegroundScorer`, shared by
    the levels). alpha_l are learnt scalars, initialised U(-0.3, 0.3) as the official code.

    Shapes: tokens (MultiScaleTokens) -> logits [B, N] (level order as the tokens).
    """

    def __init__(self, dim: int, num_levels: int, hidden: int | None = None):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.scorer = ForegroundScorer(dim, hidden or dim)
        self.alpha = nn.Parameter(torch.empty(max(num_levels - 1, 1)).uniform_(-0.3, 0.3))

    def forward(self, tokens: MultiScaleTokens) -> torch.Tensor:
        feats = self.project(tokens.src.masked_fill(tokens.padding[..., None], 0.0))
        starts = [0]
        for h, w in tokens.level_shapes:
            starts.append(starts[-1] + h * w)
        scores: list[torch.Tensor] = [None] * tokens.num_levels  # type: ignore[list-item]
        above = None
        for level in reversed(range(tokens.num_levels)):
            h, w = tokens.level_shapes[level]
            feat = feats[:, starts[level] : starts[level + 1]]
            padding = tokens.padding[:, starts[level] : starts[level + 1]]
            if above is not None:
                up = F.interpolate(above, size=(h, w), mode="bilinear", align_corners=True).flatten(1)
                feat = feat + feat * up[..., None] * self.alpha[level]
            scores[level] = self.scorer(feat, padding)
            above = scores[level].view(-1, 1, h, w)
        return torch.cat(scores, 1)


class DualAttentionEncoderLayer(nn.Module):
    """One Focus-DETR encoder layer on the kept tokens.

    1. Multi-category score: max over classes of sigmoid(class_head(token)) x sigmoid(foreground logit);
       its top `num_attn_tokens` tokens run softmax self-attention among themselves (+ residual, LN).
    2. Every kept token runs deformable attention over the full token map, then the FFN (post-norm).

    Shapes: query, query_pos [B, K, D]; fg_logits [B, K]; reference_points [B, K, L, 2];
    value [B, N, D] -> [B, K, D].
    """

    def __init__(self, dim, num_heads, num_levels, num_points, ffn_dim, dropout, num_attn_tokens: int):
        super().__init__()
        self.num_attn_tokens = num_attn_tokens
        self.self_attn = QuerySelfAttention(dim, num_heads)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.deformable = DeformableEncoderLayer(dim, num_heads, num_levels, num_points, ffn_dim, dropout)

    def forward(self, query, query_pos, fg_logits, reference_points, value, tokens, class_head):
        with torch.no_grad():  # the scores only choose tokens (as the official code)
            category = class_head(query).sigmoid().max(-1).values
            score = category * fg_logits.sigmoid()
        top = score.topk(min(self.num_attn_tokens, query.shape[1]), dim=1).indices
        picked, picked_pos = gather_tokens(query, top), gather_tokens(query_pos, top)
        picked = self.norm(picked + self.dropout(self.self_attn(picked, picked_pos)))
        query = scatter_tokens(query, top, picked)
        return self.deformable(query, query_pos, reference_points, value, tokens)


class FocusEncoder(nn.Module):
    """Focus-DETR's encoder: foreground selection, a cascade of kept tokens, dual attention.

    Args:
        keep_ratio: rho, the kept fraction of real tokens (paper 0.5).
        cascade: per-layer fractions of the kept tokens (paper, 6 layers: 1.0, 0.8, 0.6, 0.6, 0.4, 0.2);
            None = the paper's for 6 layers, else evenly from 1.0 down to 0.2.
        num_attn_tokens: tokens of the self-attention among object tokens (paper 300).
        dense: keep every token and skip the scoring, the selection and the object self-attention (the plain
            DINO encoder, the baseline of the cost comparison; no select loss then).

    forward(tokens, class_head) -> (memory [B, N, D], {"fg_logits" [B, N], "fg_centres" [B, N, 2],
    "fg_levels" [N], "fg_padding" [B, N], "num_kept" list of per-layer counts}); dense: only "num_kept".
    """

    def __init__(
        self,
        num_layers=6,
        dim=256,
        num_heads=8,
        num_levels=4,
        num_points=4,
        ffn_dim=2048,
        dropout=0.0,
        keep_ratio: float = 0.5,
        cascade: list[float] | None = None,
        num_attn_tokens: int = 300,
        fg_hidden: int | None = None,
        dense: bool = False,
    ):
        super().__init__()
        check_range("keep_ratio", keep_ratio, 0.0, 1.0, low_inclusive=False)
        check_range("num_attn_tokens", num_attn_tokens, 1)
        if cascade is None:
            cascade = (
                PAPER_CASCADE
                if num_layers == 6
                else [1.0 - 0.8 * i / max(num_layers - 1, 1) for i in range(num_layers)]
            )
        cascade = [float(c) for c in cascade]
        if len(cascade) != num_layers or not all(0 < c <= 1 for c in cascade):
            raise ConfigError("cascade", cascade, f"{num_layers} fractions in (0, 1], one per encoder layer")
        self.keep_ratio, self.cascade, self.dense = keep_ratio, cascade, dense
        # the dense baseline has no scorer and no object self-attention (no parameters without gradients)
        self.selector = None if dense else ForegroundTokenSelector(dim, num_levels, fg_hidden)
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(dim, num_heads, num_levels, num_points, ffn_dim, dropout)
            if dense
            else DualAttentionEncoderLayer(dim, num_heads, num_levels, num_points, ffn_dim, dropout, num_attn_tokens)
            for _ in range(num_layers)
        )

    def kept_counts(self, tokens: MultiScaleTokens) -> list[int]:
        """Tokens updated by each layer: K_i = int(K * cascade_i), K = int(rho * most real tokens) + 1.

        On float64 tensors, the IEEE doubles of Python's floats, so that an exported graph computes the same
        counts for any image size (torch.export's symbolic float sizes become float32 in ONNX, which rounds some
        K * cascade_i to the next integer); there the counts are data-dependent sizes, with their bounds checked.
        """
        total = tokens.src.shape[1]
        if self.dense:
            return [total] * len(self.layers)
        device = tokens.src.device
        real = (~tokens.padding).sum(1).max() if tokens.padded else torch.tensor(total, device=device)
        budget = (real.double() * self.keep_ratio).floor() + 1
        cascade = torch.tensor(self.cascade, dtype=torch.float64, device=device)
        counts = (budget * cascade).floor().clamp(1, total).long().tolist()
        for k in counts:
            torch._check(k >= 1)
            torch._check(k <= total)
        return counts

    def forward(self, tokens: MultiScaleTokens, class_head: nn.Module, **_) -> tuple[torch.Tensor, dict]:
        counts = self.kept_counts(tokens)
        output, ref_all = tokens.src, tokens.reference_points()
        if self.dense or self.selector is None:  # the DINO encoder: no scoring, selection or object attention
            for layer in self.layers:  # (a Focus model switched to dense runs only its layers' deformable part)
                block = layer.deformable if isinstance(layer, DualAttentionEncoderLayer) else layer
                output = block(output, tokens.pos, ref_all, output, tokens)
            return output, {"num_kept": counts}
        fg_logits = self.selector(tokens)
        ranking = fg_logits.detach().masked_fill(tokens.padding, float("-inf"))
        order = ranking.topk(counts[0], dim=1).indices  # the cascade's sets are nested prefixes of this
        for layer, k in zip(self.layers, counts):
            index = order[:, :k]
            query = layer(
                gather_tokens(output, index),
                gather_tokens(tokens.pos, index),
                gather_tokens(fg_logits, index),
                gather_tokens(ref_all, index),
                output,
                tokens,
                class_head,
            )
            output = scatter_tokens(output, index, query)
        extras = {
            "fg_logits": fg_logits,
            "fg_centres": tokens.token_centres(),
            "fg_levels": tokens.token_levels(),
            "fg_padding": tokens.padding,
            "num_kept": counts,
        }
        return output, extras


class FocusDETR(DINODetector):
    """Focus-DETR: `DINODetector` with `FocusEncoder` (see the module docstring); extra args as FocusEncoder's
    (`dense_encoder` = its `dense`). Everything else, including forward/forward_train, is the base's;
    forward_train adds the encoder's `fg_*` outputs for the select loss."""

    def __init__(
        self,
        *args,
        keep_ratio: float = 0.5,
        cascade: list[float] | None = None,
        num_attn_tokens: int = 300,
        fg_hidden: int | None = None,
        dense_encoder: bool = False,
        **kwargs,
    ):
        encoder = partial(
            FocusEncoder,
            keep_ratio=keep_ratio,
            cascade=None if cascade is None else list(cascade),
            num_attn_tokens=num_attn_tokens,
            fg_hidden=fg_hidden,
            dense=dense_encoder,
        )
        super().__init__(*args, encoder=encoder, **kwargs)
