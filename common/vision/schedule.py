"""Learning-rate schedules for the vision apps, as `_partial_` configs the module completes."""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer, total_steps: int, warmup_steps: int = 0, warmup_fraction: float = 0.0, min_lr_ratio: float = 0.01
):
    """Linear warm-up then cosine decay to `min_lr_ratio` x the base lr, stepped every optimiser step.

    `total_steps` is filled by ImageClassificationModule from the trainer (estimated_stepping_batches);
    the warm-up lasts `max(warmup_steps, warmup_fraction * total_steps)` steps.
    """
    warmup = max(int(warmup_steps), int(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
