"""`make predict app=NAME input=PATH [export=DIR]` (`export_dir=DIR` here): run an export folder on a user's file.

Needs only the export folder (no checkpoint, no training config): the model is rebuilt from
`model.yaml` + `model.safetensors`, and the app's predictor reads the file and writes the result. The
predictor is `predictor` in the repository's config for the app the export names (configs/app/<app>.yaml
or its domain's file): a received folder names its app, never the code that runs on it.
"""

from __future__ import annotations

import sys

from common.pipeline.runs import refuse_unknown_app

if __name__ == "__main__":  # before torch and Lightning load: a mistyped app= is answered at once
    refuse_unknown_app(sys.argv[1:])

import json
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from common.errors import InputError, ManyheadsError
from common.pipeline.export import load
from common.pipeline.runs import CONFIG_DIR, known_apps, user_errors
from common.pipeline.safety import EXPORT_TARGETS, safe_instantiate


def app_predictor(app: str) -> Callable:
    """`predictor` (a `_partial_` target under apps./common.) of the repository's config for `app`."""
    overrides = [f"app={app}"]
    if GlobalHydra.instance().is_initialized():  # under @hydra.main, whose config dir is CONFIG_DIR
        cfg = compose(config_name="predict", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=CONFIG_DIR):
            cfg = compose(config_name="predict", overrides=overrides)
    source = f"configs/app/{app}.yaml"
    if cfg.get("predictor") is None:
        raise ManyheadsError(f"{source} names no predictor (predictor: {{_target_: ..., _partial_: true}})")
    return safe_instantiate(cfg.predictor, section="predictor", allowed=EXPORT_TARGETS, source=source)


def predict(export_dir: str | Path, input_path: str | Path, out_dir: str | Path) -> dict:
    export_dir, input_path, out_dir = Path(export_dir), Path(input_path), Path(out_dir)
    info_file = export_dir / "export.json"
    if not info_file.is_file():
        raise ManyheadsError(f"not an export folder: {info_file} is missing (make one with `make export`)")
    info = json.loads(info_file.read_text())
    app = info.get("app")
    if app not in known_apps():
        raise ManyheadsError(f"{info_file}: app={app!r} is not one of {known_apps()}")
    if not input_path.exists():
        raise InputError(input_path, "an existing file", problem="input not found")
    model = load(export_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return app_predictor(app)(model, input_path, out_dir, info)


@hydra.main(config_path=CONFIG_DIR, config_name="predict")
@user_errors
def main(cfg: DictConfig) -> None:
    export_dir = cfg.export_dir or Path(cfg.paths.exports_dir) / cfg.app_name
    out_dir = cfg.out or HydraConfig.get().runtime.output_dir
    written = predict(export_dir, cfg.input, out_dir)
    print("\nwritten:")
    for name, path in written.items():
        print(f"  {name}: {path}")


if __name__ == "__main__":
    main()
