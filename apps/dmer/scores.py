"""DMER scores and losses, as the official code computes them (utils/score.py, utils/train.py): CCC, PCC and
RMSE of each piece's curve over its steps, averaged over the pieces; the score loss is 1 - their mean over
{arousal, valence} x {CCC, PCC, 1 - RMSE}; the diagonal attention loss pulls the diagonal of the (head- and
batch-averaged) last-layer attention map toward 0.9 for the local scale and 0.1 for the global one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DIMENSIONS = ("arousal", "valence")
EPS = 1e-8


def ccc(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Concordance correlation over the last axis: 2 cov / (var_p + var_t + (mean_p - mean_t)^2)."""
    mp, mt = pred.mean(-1, keepdim=True), target.mean(-1, keepdim=True)
    cov = ((pred - mp) * (target - mt)).mean(-1)
    return 2 * cov / (pred.var(-1, unbiased=False) + target.var(-1, unbiased=False) + (mp - mt).squeeze(-1) ** 2 + EPS)


def pcc(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over the last axis."""
    p, t = pred - pred.mean(-1, keepdim=True), target - target.mean(-1, keepdim=True)
    return (p * t).sum(-1) / (p.norm(dim=-1) * t.norm(dim=-1) + EPS)


def rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target) ** 2).mean(-1).sqrt()


def piece_scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"<dim>_<ccc|pcc|rmse>": [B]} per piece, from [B, T, 2] curves (arousal, valence)."""
    out = {}
    for d, name in enumerate(DIMENSIONS):
        p, t = pred[..., d], target[..., d]
        out |= {f"{name}_ccc": ccc(p, t), f"{name}_pcc": pcc(p, t), f"{name}_rmse": rmse(p, t)}
    return out


def score_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over {arousal, valence} x {CCC, PCC, 1 - RMSE} of the batch-averaged per-piece scores."""
    scores = piece_scores(pred, target)
    return 1 - torch.stack([v.mean() if "rmse" not in k else 1 - v.mean() for k, v in scores.items()]).mean()


def diagonal_attention_loss(
    local_weights: torch.Tensor, global_weights: torch.Tensor, local_target: float = 0.9, global_target: float = 0.1
) -> torch.Tensor:
    """MSE of the diagonals of the mean attention maps ([B, H, T, T] averaged over B and H) to their targets."""
    loss = local_weights.new_zeros(())
    for weights, target in ((local_weights, local_target), (global_weights, global_target)):
        diagonal = weights.mean(dim=(0, 1)).diagonal()
        loss = loss + F.mse_loss(diagonal, torch.full_like(diagonal, target))
    return loss
