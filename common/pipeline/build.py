"""Build an app's data module, model and Lightning module from a config (train, eval and export share this)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from common.pipeline.safety import EXPORT_TARGETS, safe_instantiate


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
    """The app's nn.Module from its model config (only `apps.` and `common.` targets)."""
    return safe_instantiate(model_cfg, section="model", allowed=EXPORT_TARGETS, source=source)


def build_module(cfg: DictConfig, model):
    return safe_instantiate(cfg.module, section="module", model=model)
