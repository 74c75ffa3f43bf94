"""`make predict app=NAME input=PATH [export=DIR] [ARGS="option=VALUE"]` (`export_dir=DIR` here): run an export
folder on a user's file (or, for an app whose config says `predict_text_input: true`, on literal text). Options a
predictor takes (nestedmorph's `fixed`, dmer's `adapt`, lina_speech's `voice`) are top-level keys of its app config.

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

import inspect
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from common.errors import InputError, ManyheadsError
from common.pipeline.app_config import app_config
from common.pipeline.export import load, read_info
from common.pipeline.runs import CONFIG_DIR, user_errors
from common.pipeline.safety import APP_TARGETS, hydra_whitelist, safe_instantiate


def app_predictor(app: str) -> Callable:
    """`predictor` (a `_partial_` predictor function of the apps) of the repository's config for `app`."""
    source = f"configs/app/{app}.yaml"
    cfg = app_config(app, source)
    if cfg.get("predictor") is None:
        raise ManyheadsError(f"{source} names no predictor (predictor: {{_target_: ..., _partial_: true}})")
    return safe_instantiate(cfg.predictor, section="predictor", allowed=APP_TARGETS, source=source)


def predictor_options(predictor: Callable, cfg) -> dict:
    """The predictor's own keyword options (its parameters after model, input_path, out_dir, spec) from the config's
    top-level keys of the same names, which the app's config declares with null defaults (`ARGS="fixed=PATH"`)."""
    names = list(inspect.signature(predictor).parameters)[4:]
    return {name: cfg.get(name) for name in names if cfg.get(name) is not None}


def predict(export_dir: str | Path, input_path: str | Path, out_dir: str | Path, cfg=None) -> dict:
    """Run the export at `export_dir` on `input_path`. `cfg`: the predict config (the predictor's options, and
    whether the app takes literal text as input: `predict_text_input: true` in the app's config)."""
    cfg = cfg or {}
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    info = read_info(export_dir)
    if Path(input_path).exists():
        input_path = Path(input_path)
    elif not cfg.get("predict_text_input", False):
        raise InputError(input_path, "an existing file", problem="input not found")
    model = load(export_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = app_predictor(info["app"])
    return predictor(model, input_path, out_dir, info, **predictor_options(predictor, cfg))


@hydra.main(config_path=CONFIG_DIR, config_name="predict")
@user_errors
def main(cfg: DictConfig) -> None:
    export_dir = cfg.export_dir or Path(cfg.paths.exports_dir) / cfg.app_name
    out_dir = cfg.out or HydraConfig.get().runtime.output_dir
    written = predict(export_dir, cfg.input, out_dir, cfg)
    print("\nwritten:")
    for name, path in written.items():
        print(f"  {name}: {path}")


if __name__ == "__main__":
    with hydra_whitelist():
        main()
