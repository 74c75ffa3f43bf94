"""`make train app=NAME`: train an app, write its run folder, return the sweep objective.

python -m common.pipeline.train app=scgc model.variant=scgc_star
python -m common.pipeline.train app=scgc ckpt_path=last          # resume the latest run where it stopped
python -m common.pipeline.train -m app=scgc sweep=scgc           # Optuna sweep
"""

from __future__ import annotations

import sys

from common.pipeline.runs import refuse_unknown_app

if __name__ == "__main__":  # before torch and Lightning load: a mistyped app= is answered at once
    refuse_unknown_app(sys.argv[1:])

import time
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError, check_choice
from common.pipeline.build import build_datamodule, build_model, build_module, build_trainer
from common.pipeline.callbacks import StoreRunConfig, TrainThroughput
from common.pipeline.checkpoints import AtomicCheckpointIO
from common.pipeline.files import point_link, write_json
from common.pipeline.runs import (
    CONFIG_DIR,
    device_name,
    register_resolvers,
    resolve_checkpoint,
    split_metrics,
    user_errors,
    versions,
)
from common.pipeline.safety import safe_instantiate

register_resolvers()


def _instantiate_group(group: DictConfig | None, section: str) -> list:
    if not group:
        return []
    return [safe_instantiate(c, section=f"{section}.{k}") for k, c in group.items() if c and "_target_" in c]


def train(cfg: DictConfig) -> dict:
    """Fit, test and write `metrics.json`; returns the metrics dict."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    check_choice("monitor.mode", cfg.monitor.mode, ("min", "max"))
    check_choice("test_ckpt", cfg.test_ckpt, ("best", "last"))
    ckpt_path = None
    if cfg.ckpt_path is not None:
        ckpt_path = resolve_checkpoint(cfg.paths.runs_dir, cfg.app_name, cfg.ckpt_path, which="last")

    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg.model)
    module = build_module(cfg, model)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    throughput = TrainThroughput()
    callbacks = _instantiate_group(cfg.callbacks, "callbacks") + [StoreRunConfig(resolved), throughput]
    loggers = _instantiate_group(cfg.logger, "logger")
    trainer: L.Trainer = build_trainer(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
    )
    if trainer.is_global_zero:
        OmegaConf.save(OmegaConf.create(resolved), run_dir / "config.yaml")
        if HydraConfig.get().mode == RunMode.RUN:
            point_link(Path(cfg.paths.runs_dir) / cfg.app_name / "latest", run_dir)

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    train_seconds = time.perf_counter() - start
    val = split_metrics(trainer.callback_metrics, "val/")

    test = {}
    if cfg.test:
        ckpt_cb = trainer.checkpoint_callback
        test_ckpt = ckpt_cb.best_model_path if cfg.test_ckpt == "best" else ckpt_cb.last_model_path
        results = trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt or None, verbose=False)
        test = split_metrics(results[0] if results else {}, "test/")

    best = trainer.checkpoint_callback.best_model_score
    metrics = {
        "app": cfg.app_name,
        "dataset": getattr(datamodule, "dataset_name", None),
        "monitor": {"name": cfg.monitor.name, "mode": cfg.monitor.mode, "best": None if best is None else float(best)},
        "val": val,
        "test": test,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "train_seconds": round(train_seconds, 3),
        "train_samples_per_s": throughput.samples_per_second(trainer.world_size),
        "device": device_name(),
        "versions": versions(),
    }
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
        print(f"\nrun folder: {run_dir}")
        print(f"val:  {val}\ntest: {test}", flush=True)
    return metrics


def objective(cfg: DictConfig, metrics: dict) -> float | None:
    """The value an Optuna sweep optimises: `optimized_metric` as `val/<name>` or `test/<name>`."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    split, _, key = name.partition("/")
    if split not in ("val", "test") or key not in metrics.get(split, {}):
        raise ConfigError("optimized_metric", name, f"val/<metric> or test/<metric> among {metrics.get(split)}")
    return metrics[split][key]


@hydra.main(config_path=CONFIG_DIR, config_name="train")
@user_errors
def main(cfg: DictConfig) -> float | None:
    return objective(cfg, train(cfg))


if __name__ == "__main__":
    main()
