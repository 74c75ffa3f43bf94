"""Detection metrics under DDP: COCOeval of 2 processes (ddp_cpu's trainer, fork launcher; see
test_ddp_metrics.py) is that of 1 process, against the datamodule's COCO ground truth and against the ground
truth gathered from the batches; 5 test images in batches of 2: rank 1 gets a repeat of the first image."""

from __future__ import annotations

import pytest
import torch

from tests.common.detection.test_module import (
    TinyDetector,
    make_datamodule,
    make_module,
    shapes_root,  # noqa: F401 (fixture)
)
from tests.common.pipeline.test_ddp_metrics import one_and_two_processes, one_thread  # noqa: F401 (fixture)


class GridDetector(TinyDetector):
    """TinyDetector's class scores over a fixed grid of boxes (4 x 4 centres x 3 sizes): untrained, it still
    places some boxes on objects, so the AP it gets is above 0 and depends on every image it is scored on."""

    def __init__(self):
        super().__init__(num_queries=48)
        centre = (torch.arange(4) + 0.5) / 4
        cx, cy = (c.flatten() for c in torch.meshgrid(centre, centre, indexing="xy"))
        sizes = [torch.full((16,), s) for s in (0.15, 0.25, 0.4)]
        self.register_buffer("grid", torch.cat([torch.stack([cx, cy, s, s], 1) for s in sizes]))

    def forward(self, images, masks=None):
        logits, _ = super().forward(images, masks)
        return logits, self.grid.expand(len(images), -1, -1)


@pytest.mark.parametrize("source", ["datamodule", "batches"])
def test_detection_metrics_of_two_processes_are_those_of_one(shapes_root, source):  # noqa: F811
    dm = make_datamodule(shapes_root, num_test=5, eval_batch_size=2)
    module = make_module()
    module.model = GridDetector()

    def test(t, m):
        if source == "datamodule":
            return t.test(m, datamodule=dm, verbose=False)[0]
        dm.setup("test")
        return t.test(m, dataloaders=dm.test_dataloader(), verbose=False)[0]

    one, two = one_and_two_processes(module, test)
    assert one["test/map_50"] > 0, one
    # the same detections of the same 5 images reach COCOeval on both sides: equal exactly
    assert one == two
