"""`make predict app=NAME input=PATH [export=DIR]` (`export_dir=DIR` here): run an export folder on a user's file.

Needs only the export folder (no checkpoint, no training config): the model is rebuilt from
`model.yaml` + `model.safetensors`, and the app's `predict.py` reads the file and writes the result.
"""

from __future__ import annotations

import sys

from common.pipeline.runs import refuse_unknown_app

if __name__ == "__main__":  # before torch and Lightning load: a mistyped app= is answered at once
    refuse_unknown_app(sys.argv[1:])

import importlib
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from common.errors import InputError, ManyheadsError
from common.pipeline.export import load
from common.pipeline.runs import CONFIG_DIR, known_apps, user_errors


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
    app_predict = importlib.import_module(f"apps.{app}.predict").predict
    return app_predict(model, input_path, out_dir, info)


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
