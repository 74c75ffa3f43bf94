"""Run folders, app discovery and the small facts every entry point shares."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from common.errors import ManyheadsError
from common.pipeline.jobs import current_job, job_run_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(REPO_ROOT / "configs")
TIME_FORMAT = "%Y-%m-%d_%H-%M-%S"


def known_apps() -> list[str]:
    return sorted(p.stem for p in (REPO_ROOT / "configs" / "app").glob("*.yaml"))


def run_dir_for(runs_dir: str, app: str, ckpt_path: str | None) -> str:
    """Hydra's run dir: the resumed run's own folder when resuming; in a torchrun or SLURM job, the folder of the
    job's rank 0 (the one it trained in before a requeue or restart); else a new timestamped one."""
    app_runs = Path(runs_dir) / app
    if ckpt_path == "last" and (app_runs / "latest").exists():
        return str((app_runs / "latest").resolve())
    if ckpt_path not in (None, "last") and Path(ckpt_path).parent.name == "checkpoints":
        return str(Path(ckpt_path).resolve().parent.parent)
    return str(job_run_dir(app_runs, lambda: _new_run_dir(app_runs)) or _new_run_dir(app_runs))


def _new_run_dir(app_runs: Path) -> Path:
    stamp = datetime.now().strftime(TIME_FORMAT)
    candidate, n = app_runs / stamp, 1
    while candidate.exists():  # two runs in one second (tests, scripts)
        candidate, n = app_runs / f"{stamp}_{n}", n + 1
    return candidate


def hydra_subdir(run_dir: str) -> str | None:
    """Where Hydra writes its files (config.yaml, hydra.yaml, overrides.yaml) in `run_dir`: `.hydra`, or, when the
    folder already holds them (a resumed or requeued run), `.hydra/resume-<time>`, so the run's own stay as written.
    None (not written) for the other ranks of a torchrun or SLURM job: the folder is rank 0's."""
    if (job := current_job()) is not None and job.rank != 0:
        return None
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
