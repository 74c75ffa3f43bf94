"""BiFormer's Lightning module: the shared image classifier plus the routing picture."""

from __future__ import annotations

from pathlib import Path

import torch

from common.utils.modes import eval_mode
from common.vision.module import ImageClassificationModule


class BiFormerModule(ImageClassificationModule):
    @torch.no_grad()
    def make_plots(self, plot_dir: Path, datamodule) -> list[Path]:
        """The shared prediction grid; routing.png (last routing stage) and routing_stage1.png (first stage)
        for the first test image."""
        from apps.biformer.plots import routing_figure

        paths = super().make_plots(plot_dir, datamodule)
        image, label = datamodule.splits["test"][0]
        name = datamodule.class_names[int(label)]
        title = f"test image 0 ({name})"
        image = image.to(self.device)
        with eval_mode(self.model):
            written = [
                routing_figure(self.model.net, image, title, Path(plot_dir) / "routing.png"),
                routing_figure(self.model.net, image, title, Path(plot_dir) / "routing_stage1.png", stage=0),
            ]
        return paths + [p for p in written if p]
