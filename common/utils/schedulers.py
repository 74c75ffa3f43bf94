"""Lightning's optimizer config from a `_partial_` scheduler: per step if it wants the run's length, else per epoch."""

from __future__ import annotations

import inspect

from torch.optim.lr_scheduler import ReduceLROnPlateau


def with_scheduler(optimizer, scheduler_factory, trainer, monitor: str | None = None):
    """`optimizer` alone, or with its scheduler. A factory that takes `total_steps` (e.g. warm-up + cosine) gets the
    run's optimizer steps and steps every batch; any other (torch's MultiStepLR, ...) steps every epoch, and a
    ReduceLROnPlateau steps on the logged metric `monitor`."""
    if scheduler_factory is None:
        return optimizer
    params = inspect.signature(scheduler_factory).parameters
    if "total_steps" in params and "total_steps" not in getattr(scheduler_factory, "keywords", {}):
        scheduler = scheduler_factory(optimizer, total_steps=int(trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
    scheduler = scheduler_factory(optimizer)
    config = {"scheduler": scheduler, "interval": "epoch"}
    if isinstance(scheduler, ReduceLROnPlateau):
        config["monitor"] = monitor
    return {"optimizer": optimizer, "lr_scheduler": config}
