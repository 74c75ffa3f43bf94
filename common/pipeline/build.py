"""Build an app's data module, model, Lightning module and trainer from a config (train, eval, export share this)."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from common.pipeline.arguments import check_arguments
from common.pipeline.safety import APP_TARGETS, safe_instantiate


def build_datamodule(cfg: DictConfig, stage: str = "fit"):
    """Instantiate `cfg.data`, prepare and set it up, and fill `cfg.model` with what the data decides."""
    datamodule = safe_instantiate(cfg.data, section="data")
    datamodule.prepare_data()
    datamodule.setup(stage)
    with open_dict(cfg):
        for key, value in datamodule.model_kwargs().items():
            OmegaConf.update(cfg, f"model.{key}", value, merge=False)
    return datamodule


def build_model(model_cfg, source: str = "config"):
    """The app's nn.Module from its model config (only the apps' model classes and factories)."""
    return safe_instantiate(model_cfg, section="model", allowed=APP_TARGETS, source=source)


def build_module(cfg: DictConfig, model):
    return safe_instantiate(cfg.module, section="module", model=model)


def build_trainer(trainer_cfg: DictConfig, **kwargs) -> L.Trainer:
    """The Lightning trainer, its config's values checked against `Trainer`'s argument types first."""
    check_arguments(trainer_cfg, L.Trainer.__init__, "trainer", given=kwargs)
    return safe_instantiate(trainer_cfg, section="trainer", **kwargs)
