"""The repository's config for an app: the only source of the code (`_target_`s) a received file may run."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from common.errors import ManyheadsError
from common.pipeline.runs import CONFIG_DIR, known_apps


def check_app(app, source: str) -> None:
    """Refuse an `app` named by `source` (a checkpoint or export file) that is not one of the apps."""
    if app not in known_apps():
        raise ManyheadsError(f"{source}: app={app!r} is not one of {known_apps()}")


def app_config(app, source: str) -> DictConfig:
    """`configs/train.yaml` composed for `app` (the app named by `source`, a checkpoint or export file)."""
    check_app(app, source)
    overrides = [f"app={app}"]
    if GlobalHydra.instance().is_initialized():  # under @hydra.main, whose config dir is CONFIG_DIR
        return compose(config_name="train", overrides=overrides)
    with initialize_config_dir(config_dir=CONFIG_DIR):
        return compose(config_name="train", overrides=overrides)
