"""Multi-scale deformable attention (Deformable DETR): module, dispatching op and torch reference."""

from common.attention.deformable_ms.module import MultiScaleDeformableAttention, deformable_ms
from common.attention.deformable_ms.reference import deformable_ms_torch

__all__ = ["MultiScaleDeformableAttention", "deformable_ms", "deformable_ms_torch"]
