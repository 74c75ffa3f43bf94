"""Nothing unpickles: checkpoints load with `weights_only=True`, configs instantiate whitelisted targets only."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError, ManyheadsError, UnsafeFileError

# Targets a training config may name (the user's own config tree).
TRAIN_TARGETS = ("apps.", "common.", "torch.", "lightning.", "torchmetrics.", "timm.", "torch_geometric.", "monai.")
# Targets a model.yaml inside an export may name: it travels between machines, so only our own code.
EXPORT_TARGETS = ("apps.", "common.")


def check_targets(cfg, allowed: tuple[str, ...], source: str) -> None:
    """Raise UnsafeFileError if any `_target_` in `cfg` lies outside the `allowed` module prefixes."""
    container = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    stack = [container]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and not (isinstance(target, str) and target.startswith(allowed)):
                raise UnsafeFileError(
                    f"{source}: refused to instantiate _target_={target!r}: only targets under "
                    f"{', '.join(allowed)} are allowed"
                )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def safe_instantiate(cfg, *, section: str, allowed: tuple[str, ...] = TRAIN_TARGETS, source: str = "config", **kwargs):
    """Instantiate `cfg` after checking its targets; a ConfigError inside gets the key prefixed by `section`."""
    check_targets(cfg, allowed, source)
    try:
        return instantiate(cfg, _execution_whitelist_=[f"{p}*" for p in allowed], **kwargs)
    except ConfigError as exc:
        raise exc.within(section) from None
    except InstantiationException as exc:  # Hydra may wrap the target's own exception
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, ManyheadsError):
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause.within(section) from None
        if isinstance(cause, ManyheadsError):
            raise cause from None
        raise


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with `weights_only=True`; anything that would run code on load is refused."""
    path = Path(path)
    if not path.is_file():
        raise ManyheadsError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UnsafeFileError(
            f"{path}: refused to load: it holds pickled objects beyond tensors and plain containers, which "
            f"could run code on load ({first_line[:200]})"
        ) from None
    except (RuntimeError, EOFError) as exc:
        raise ManyheadsError(f"{path}: not a readable checkpoint ({exc})") from None
