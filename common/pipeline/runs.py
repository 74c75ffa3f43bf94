"""Run folders, app discovery and the small facts every entry point shares."""

from __future__ import annotations

import copy
import functools
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from common.errors import ManyheadsError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(REPO_ROOT / "configs")
TIME_FORMAT = "%Y-%m-%d_%H-%M-%S"


def known_apps() -> list[str]:
    return sorted(p.stem for p in (REPO_ROOT / "configs" / "app").glob("*.yaml"))


def slurm_job_link(app_runs: Path) -> Path | None:
    """`runs/<app>/.slurm-<job id>`, the link to the run folder a SLURM job trains in; None outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    return app_runs / f".slurm-{job}" if job else None


def slurm_requeued_run(app_runs: Path) -> Path | None:
    """The run folder a requeued SLURM job (Lightning's auto-requeue, or SLURM's own) trained in before."""
    link = slurm_job_link(app_runs)
    if link is None or os.environ.get("SLURM_RESTART_COUNT", "0") in ("", "0") or not link.exists():
        return None
    return link.resolve()


def run_dir_for(runs_dir: str, app: str, ckpt_path: str | None) -> str:
    """Hydra's run dir: the resumed run's own folder when resuming (or when SLURM requeued the job), else a new
    timestamped one."""
    app_runs = Path(runs_dir) / app
    if ckpt_path is None and (requeued := slurm_requeued_run(app_runs)) is not None:
        return str(requeued)
    if ckpt_path == "last" and (app_runs / "latest").exists():
        return str((app_runs / "latest").resolve())
    if ckpt_path not in (None, "last") and Path(ckpt_path).parent.name == "checkpoints":
        return str(Path(ckpt_path).resolve().parent.parent)
    stamp = datetime.now().strftime(TIME_FORMAT)
    candidate, n = app_runs / stamp, 1
    while candidate.exists():  # two runs in one second (tests, scripts)
        candidate, n = app_runs / f"{stamp}_{n}", n + 1
    return str(candidate)


def hydra_subdir(run_dir: str) -> str:
    """Where Hydra writes its files (config.yaml, hydra.yaml, overrides.yaml) in `run_dir`: `.hydra`, or, when the
    folder already holds them (a resumed or requeued run), `.hydra/resume-<time>`, so the run's own stay as written."""
    if not (Path(run_dir) / ".hydra" / "config.yaml").exists():
        return ".hydra"
    stamp = datetime.now().strftime(TIME_FORMAT)
    candidate, n = f".hydra/resume-{stamp}", 1
    while (Path(run_dir) / candidate).exists():
        candidate, n = f".hydra/resume-{stamp}_{n}", n + 1
    return candidate


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_resolver("run_dir", run_dir_for, use_cache=True)
    if not OmegaConf.has_resolver("hydra_subdir"):  # cached: decided once, before Hydra writes there
        OmegaConf.register_resolver("hydra_subdir", hydra_subdir, use_cache=True)


def resolve_checkpoint(runs_dir: str, app: str, ckpt, which: str = "best") -> Path:
    """`ckpt` as given, or `runs/<app>/latest/checkpoints/<which>.ckpt`; a clear error when absent."""
    if ckpt not in (None, "last", "best"):
        path = Path(ckpt)
    else:
        path = Path(runs_dir) / app / "latest" / "checkpoints" / f"{ckpt or which}.ckpt"
    if not path.is_file():
        raise ManyheadsError(
            f"checkpoint not found: {path}\n  train first (make train app={app}) or pass ckpt=PATH to a .ckpt file"
        )
    return path


def resumed_config(cfg: DictConfig, stored: DictConfig, overrides: list[str]) -> DictConfig:
    """The config a resumed run continues with: its own stored (resolved) config, with the command line's
    `overrides` on top. From today's composition `cfg` come only what is derived or code:
    - interpolated values (paths, the trainer's `max_epochs`, ...): derived again, from the run's values, here;
    - `_target_`s: a file the run wrote never names the code that runs (a stored node with a `_target_` that
      today's configs lack is refused: give it on the command line again);
    - the keys of `overrides` (a group override such as `trainer=cpu` takes that group's whole node).
    Keys new since the run keep today's defaults."""
    merged = copy.deepcopy(cfg)
    with open_dict(merged):
        _overlay(merged, stored, "")
        for override in overrides:
            key = override.lstrip("+~").split("=", 1)[0]
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(merged, parent) if parent else merged
            if override.startswith("~"):
                if isinstance(node, DictConfig) and leaf in node:
                    del node[leaf]
            elif _has(cfg, key):  # `app=` and `experiment=` name no node: the run keeps its own
                OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    return merged


def _has(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node


def _names_code(node) -> bool:
    if OmegaConf.is_dict(node):
        return "_target_" in node or any(_names_code(v) for v in node.values())
    return OmegaConf.is_list(node) and any(_names_code(v) for v in node)


def _overlay(today: DictConfig, stored: DictConfig, prefix: str) -> None:
    for key, value in stored.items():
        if key == "_target_" or (key in today and OmegaConf.is_interpolation(today, key)):
            continue
        if key in today and OmegaConf.is_dict(value) and OmegaConf.is_dict(today[key]):
            _overlay(today[key], value, f"{prefix}{key}.")
        elif not _names_code(value):
            today[key] = value
        elif key not in today:
            raise ManyheadsError(
                f"the resumed run's config has {prefix}{key} with a _target_ that today's configs lack; a stored "
                f"config supplies values, not code: give {prefix}{key} on the command line again"
            )


def split_metrics(metrics: dict, prefix: str) -> dict:
    """The metrics logged as `<prefix><name>` (e.g. `val/acc`), keyed by name, as floats."""
    return {k.removeprefix(prefix): float(v) for k, v in sorted(metrics.items()) if k.startswith(prefix)}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import hydra
    import lightning
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "hydra": hydra.__version__,
        "git_commit": git_commit(),
    }


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"cpu ({platform.processor() or platform.machine()})"


def user_errors(fn: Callable) -> Callable:
    """Print a ManyheadsError as one clean message and exit with status 2 (no stack trace)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ManyheadsError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return wrapper


def refuse_unknown_app(argv: list[str]) -> None:
    """Exit with the list of apps when an `app=` override names none. Light (no torch, no Hydra): the entry
    points call it before their heavy imports, so a mistyped app is answered at once."""
    apps = known_apps()
    for arg in argv:
        name = arg.split("=", 1)[1] if arg.startswith("app=") else None
        if name is not None and name not in apps and not any(c in name for c in ",*()"):  # choice()/glob sweeps
            print(f"error: unknown app {name!r}; the apps are: {', '.join(apps)}", file=sys.stderr, flush=True)
            raise SystemExit(2)
