"""Build an app's data module, model, Lightning module and trainer from a config (train, eval, export share this)."""

from __future__ import annotations

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from common.errors import ConfigError
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


COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune")


def compile_model(model, mode) -> None:
    """The `compile` switch: torch.compile `model`'s forward in place (nn.Module.compile keeps its state_dict keys,
    so checkpoints and exports are those of the plain model), and the method its module trains through where that
    is not the forward: a model names it in `TRAINING_METHOD` (a detector's `forward_train`), else training would
    stay eager under the switch."""
    if mode not in COMPILE_MODES:
        raise ConfigError(
            "compile", mode, "true, false or a torch.compile mode: default, reduce-overhead, max-autotune"
        )
    if mode:
        options = {"mode": None if mode is True else mode}
        model.compile(**options)
        if name := getattr(model, "TRAINING_METHOD", None):
            setattr(model, name, torch.compile(getattr(model, name), **options))  # an instance attribute only


def build_module(cfg: DictConfig, model):
    """The Lightning module around `model` (its forward compiled first when the config's `compile` is set)."""
    compile_model(model, cfg.get("compile", False))
    return safe_instantiate(cfg.module, section="module", model=model)


def build_trainer(trainer_cfg: DictConfig, **kwargs) -> L.Trainer:
    """The Lightning trainer, its config's values checked against `Trainer`'s argument types first."""
    check_arguments(trainer_cfg, L.Trainer.__init__, "trainer", given=kwargs)
    return safe_instantiate(trainer_cfg, section="trainer", **kwargs)
