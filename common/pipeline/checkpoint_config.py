"""The run config stored inside a checkpoint, patched by the overrides a command was given."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from common.errors import ManyheadsError
from common.pipeline.callbacks import CONFIG_KEY
from common.pipeline.safety import load_checkpoint

PATCHABLE = ("data.", "model.", "module.")


def run_config(checkpoint: dict, path: Path) -> DictConfig:
    if CONFIG_KEY not in checkpoint or "config" not in checkpoint[CONFIG_KEY]:
        raise ManyheadsError(f"{path}: no run config inside; only checkpoints written by `make train` can be used")
    return OmegaConf.create(checkpoint[CONFIG_KEY]["config"])


def load_run(ckpt_path: Path, cfg: DictConfig | None = None) -> tuple[dict, DictConfig]:
    """(checkpoint, its run config), with the command line's `data.*`/`model.*`/`module.*` overrides applied."""
    checkpoint = load_checkpoint(ckpt_path)
    run_cfg = run_config(checkpoint, ckpt_path)
    if cfg is not None and HydraConfig.initialized():
        for override in HydraConfig.get().overrides.task:
            key = override.lstrip("+~").split("=", 1)[0]
            if key.startswith(PATCHABLE):
                OmegaConf.update(run_cfg, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    return checkpoint, run_cfg


def model_state(checkpoint: dict) -> dict:
    """The weights of the Lightning module's `model` attribute."""
    return {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
