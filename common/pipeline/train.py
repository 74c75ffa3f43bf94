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
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError, check_choice
from common.pipeline.build import build_datamodule, build_model, build_module, build_trainer
from common.pipeline.callbacks import RandomState, StoreRunConfig, TrainThroughput, keep_csv_log
from common.pipeline.checkpoint_config import run_config
from common.pipeline.checkpoints import AtomicCheckpointIO, LastCheckpoint
from common.pipeline.jobs import restarted_run
from common.pipeline.requeue import slurm_requeue
from common.pipeline.resume import resumed_config
from common.pipeline.runs import (
    CONFIG_DIR,
    device_name,
    register_resolvers,
    resolve_checkpoint,
    split_metrics,
    user_errors,
    versions,
)
from common.pipeline.safety import hydra_whitelist, load_checkpoint, safe_instantiate
from common.utils.files import write_json

register_resolvers()


def _instantiate_group(group: DictConfig | None, section: str) -> list:
    if not group:
        return []
    return [safe_instantiate(c, section=f"{section}.{k}") for k, c in group.items() if c and "_target_" in c]


def _checkpoint_to_resume(cfg: DictConfig, run_dir: Path, app_runs: Path) -> Path | None:
    """`ckpt_path` resolved; or, for a job that SLURM requeued or torchrun restarted into its run folder, the newer
    of the requeue checkpoint (`hpc_ckpt_<n>.ckpt`, saved on SLURM's warning signal) and our `last.ckpt`."""
    if cfg.ckpt_path is not None:
        return resolve_checkpoint(cfg.paths.runs_dir, cfg.app_name, cfg.ckpt_path, which="last")
    if restarted_run(app_runs) == run_dir:
        saved = [*run_dir.glob("hpc_ckpt_*.ckpt"), *run_dir.glob("checkpoints/last.ckpt")]
        return max(saved, key=lambda p: p.stat().st_mtime, default=None)
    return None


def train(cfg: DictConfig) -> dict:
    """Fit, test and write `metrics.json`; returns the metrics dict."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    app_runs = Path(cfg.paths.runs_dir) / cfg.app_name
    ckpt_path = _checkpoint_to_resume(cfg, run_dir, app_runs)
    checkpoint = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    if checkpoint is not None:
        cfg = resumed_config(cfg, run_config(checkpoint, ckpt_path), HydraConfig.get().overrides.task)
    check_choice("monitor.mode", cfg.monitor.mode, ("min", "max"))
    check_choice("test_ckpt", cfg.test_ckpt, ("best", "last"))

    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg.model)
    module = build_module(cfg, model)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    throughput = TrainThroughput()
    single_run = HydraConfig.get().mode == RunMode.RUN
    latest = app_runs / "latest" if single_run else None
    last = LastCheckpoint(run_dir / "checkpoints", cfg.last_ckpt_every_n_steps, latest=latest)
    callbacks = _instantiate_group(cfg.callbacks, "callbacks") + [StoreRunConfig(resolved), RandomState(), throughput]
    loggers = _instantiate_group(cfg.logger, "logger")
    slurm_plugins, slurm_callbacks = slurm_requeue()
    trainer: L.Trainer = build_trainer(
        cfg.trainer,
        callbacks=[*callbacks, *slurm_callbacks, last],
        logger=loggers or False,
        plugins=[AtomicCheckpointIO(), *slurm_plugins],
        default_root_dir=str(run_dir),
    )
    if trainer.is_global_zero and checkpoint is not None:
        keep_csv_log(trainer.loggers, checkpoint)
    del checkpoint  # fit loads it again: no second copy of the weights meanwhile
    if trainer.is_global_zero and not (run_dir / "config.yaml").exists():  # a resumed run keeps its own
        OmegaConf.save(OmegaConf.create(resolved), run_dir / "config.yaml")

    best_ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    try:
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        train_seconds = time.perf_counter() - start
        val = split_metrics(trainer.callback_metrics, "val/")

        test = {}
        if cfg.test:
            if cfg.test_ckpt == "best":
                test_ckpt = best_ckpt.best_model_path if best_ckpt else None
            else:  # the final epoch: last.ckpt, or the weights in memory if the epoch never ended (max_epochs=0)
                test_ckpt = str(last.path) if last.path.is_file() else None
            results = trainer.test(
                module, datamodule=datamodule, ckpt_path=test_ckpt or None, verbose=False, weights_only=True
            )
            test = split_metrics(results[0] if results else {}, "test/")
    except SystemExit as exc:  # Lightning's answer to SIGTERM (status 0) and Ctrl-C (status 1)
        if not trainer.interrupted:
            raise
        if trainer.is_global_zero:
            print(_interrupted_message(cfg.app_name, last.path), file=sys.stderr, flush=True)
        raise SystemExit(143 if isinstance(exc, SIGTERMException) else 130) from None

    best = best_ckpt.best_model_score if best_ckpt else None
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


def _interrupted_message(app: str, last: Path) -> str:
    if not last.is_file():
        return f"\ninterrupted before the first checkpoint: nothing to resume; start again (make train app={app} ...)"
    checkpoint = load_checkpoint(last)
    return (
        f"\ninterrupted: {last} was written at epoch {checkpoint['epoch']}, step {checkpoint['global_step']}; "
        "resume with\n"
        f'  make train app={app} ARGS="ckpt_path={last}"'
    )


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
    with hydra_whitelist():
        main()
