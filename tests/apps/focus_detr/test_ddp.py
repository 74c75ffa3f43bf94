"""DDP training of the DETR detector when a rank's batch has no targets: no denoising queries are built there,
and the label embedding still joins the graph (`ContrastiveDenoising.idle_term`), so DDP's reducer gets a
gradient for every parameter without `find_unused_parameters` (ddp_cpu's trainer, fork launcher; see
tests/common/pipeline/test_ddp_metrics.py)."""

from __future__ import annotations

import functools

import torch
from torch.utils.data import DataLoader

from apps.focus_detr.criterion import FocusCriterion
from apps.focus_detr.model import FocusDETR
from common.detection.matcher import HungarianMatcher
from common.detection.module import DetectionModule
from tests.apps.focus_detr.test_model import RANGES, SMALL, targets
from tests.common.pipeline.test_ddp_metrics import one_and_two_processes, one_thread  # noqa: F401 (fixture)


def _collate(items):
    images = torch.stack([image for image, _ in items])
    return images, torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool), [t for _, t in items]


def test_batches_without_targets_train_under_ddp():
    """Rank 0 reads images with targets, rank 1 images without (DistributedSampler deals 0, 2 and 1, 3)."""
    torch.manual_seed(0)
    with_targets = targets()[0]
    empty = {"labels": with_targets["labels"][:0], "boxes": with_targets["boxes"][:0], "size": with_targets["size"]}
    items = [(torch.randn(3, 96, 96), t) for t in (with_targets, empty, with_targets, empty)]
    loader = DataLoader(items, batch_size=1, collate_fn=_collate)
    model = FocusDETR(3, **SMALL)
    module = DetectionModule(
        model, FocusCriterion(3, HungarianMatcher(2, 5, 2), size_ranges=RANGES), functools.partial(torch.optim.AdamW)
    )
    before = model.denoising.label_embed.weight.detach().clone()

    def fit(trainer, m):
        trainer.fit(m, train_dataloaders=loader)
        return m.model.denoising.label_embed.weight.detach(), trainer.callback_metrics["train/loss"]

    (_, loss_one), (embed_two, loss_two) = one_and_two_processes(module, fit, max_epochs=1, limit_val_batches=0)
    assert torch.isfinite(loss_one) and torch.isfinite(loss_two)
    assert not torch.equal(embed_two, before)  # rank 0's denoising gradient reached the shared weights
