"""The run config stored inside a checkpoint, patched by the overrides a command was given.

A checkpoint is a received file: its run config supplies values only. The sections that eval and export build
(`BUILT`) may name no `_target_` but the repository's config for the app the checkpoint names (`app_name`).
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from common.errors import ManyheadsError
from common.pipeline.app_config import app_config
from common.pipeline.callbacks import CONFIG_KEY
from common.pipeline.safety import check_stored, load_checkpoint, refuse_interpolations

PATCHABLE = ("data.", "model.", "module.")
BUILT = ("data", "model", "module")


def run_config(checkpoint: dict, path: Path, sections: tuple[str, ...] = BUILT) -> DictConfig:
    """The checkpoint's run config, its `sections` checked against the repository's config for its app."""
    meta = checkpoint.get(CONFIG_KEY) if isinstance(checkpoint, dict) else None
    stored = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(stored, dict):
        raise ManyheadsError(f"{path}: no run config inside; only checkpoints written by `make train` can be used")
    refuse_interpolations(stored, str(path))
    trusted = app_config(stored.get("app_name"), f"{path} (app_name)")
    for section in sections:
        check_stored(stored.get(section), trusted.get(section), str(path), section)
    return OmegaConf.create(stored)


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
