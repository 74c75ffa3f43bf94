"""`make eval app=NAME [ckpt=PATH]`: test a checkpoint (default: the latest run's) and print its metrics.

python -m common.pipeline.evaluate app=scgc
python -m common.pipeline.evaluate app=scgc ckpt=runs/scgc/<time>/checkpoints/last.ckpt data.dataset=digits_knn
"""

from __future__ import annotations

import sys

from common.pipeline.runs import refuse_unknown_app

if __name__ == "__main__":  # before torch and Lightning load: a mistyped app= is answered at once
    refuse_unknown_app(sys.argv[1:])

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from common.pipeline.build import build_datamodule, build_model, build_module, build_trainer
from common.pipeline.checkpoint_config import load_run
from common.pipeline.checkpoints import AtomicCheckpointIO
from common.pipeline.runs import (
    CONFIG_DIR,
    device_name,
    resolve_checkpoint,
    split_metrics,
    user_errors,
    versions,
)
from common.pipeline.safety import hydra_whitelist
from common.utils.files import write_json


def evaluate(cfg: DictConfig) -> dict:
    ckpt = resolve_checkpoint(cfg.paths.runs_dir, cfg.app_name, cfg.ckpt, which=cfg.get("test_ckpt", "best"))
    _, run_cfg = load_run(ckpt, cfg)
    datamodule = build_datamodule(run_cfg, stage="test")
    module = build_module(run_cfg, build_model(run_cfg.model))
    trainer = build_trainer(cfg.trainer, logger=False, plugins=[AtomicCheckpointIO()], max_epochs=1)
    results = trainer.test(module, datamodule=datamodule, ckpt_path=str(ckpt), verbose=False, weights_only=True)
    test = split_metrics(results[0], "test/")
    metrics = {
        "app": cfg.app_name,
        "checkpoint": str(ckpt),
        "dataset": getattr(datamodule, "dataset_name", None),
        "test": test,
        "device": device_name(),
        "versions": versions(),
    }
    if trainer.is_global_zero:  # under DDP every rank holds the same metrics; one writes them
        out = Path(HydraConfig.get().runtime.output_dir) / "metrics.json"
        write_json(out, metrics)
        print(f"\ncheckpoint: {ckpt}\ntest: {test}\nwritten: {out}", flush=True)
    return metrics


@hydra.main(config_path=CONFIG_DIR, config_name="eval")
@user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    with hydra_whitelist():
        main()
