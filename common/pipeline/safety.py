"""Nothing unpickles and no file names the code that runs.

Checkpoints load with `weights_only=True`. A config may only instantiate targets on an allow-list (the
patterns below, with Hydra's execution-whitelist meaning: `a.b.*` admits names under `a.b`, anything else
one exact name). A name under a wildcard must also *be* what it says: it resolves to a class defined under
an allowed pattern (so `apps.scgc.model.torch.save`, an import seen through a module, is refused), never to a
function, method or module; functions are admitted by exact name only (model factories, predictors).
Stored configs (a checkpoint's run config, an export's `model.yaml`) may not choose targets at all: each
`_target_` in them must equal the repository's config for the app at that key path (`check_stored`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from types import ModuleType

import torch
from hydra.errors import InstantiationException
from hydra.utils import execution_whitelist, get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from common.errors import ConfigError, ManyheadsError, UnsafeFileError
from common.pipeline.runs import known_apps

# The apps' own model, data, module and criterion classes, and each app's factory and predictor functions.
APP_TARGETS = (
    *(f"apps.{app}.{role}.*" for app in known_apps() for role in ("model", "module", "data", "criterion")),
    *(f"apps.{app}.model.create" for app in known_apps()),
    *(f"apps.{app}.predict.predict" for app in known_apps()),
    "common.vision.models.*",
    "common.vision.module.*",
    "common.vision.data.*",
    "common.vision.predict.predict",
    "common.detection.coco.*",
    "common.detection.matcher.*",
    "common.detection.module.*",
    "common.detection.predict.predict",
)
# A training config adds optimisers, schedulers and Lightning's trainer, callbacks and loggers.
TRAIN_TARGETS = (
    *APP_TARGETS,
    "torch.optim.*",
    "common.vision.schedule.warmup_cosine",
    "lightning.Trainer",
    "lightning.pytorch.callbacks.*",
    "lightning.pytorch.loggers.*",
    "common.pipeline.callbacks.Plots",
)
# What Hydra instantiates itself (`hydra.callbacks`, which an override or a shared sweep file may set).
HYDRA_TARGETS = ("common.pipeline.sweep.PrintBestTrial", "optuna.samplers.*")
# Targets a stored config may choose for itself: a run picks its optimiser and scheduler (experiments do), which
# only training calls; everything else comes from the repository.
STORED_FREE_TARGETS = ("torch.optim.*",)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name.startswith(p[:-1]) if p.endswith(".*") else name == p for p in patterns)


def _missing_package(target: str, exc: BaseException) -> str | None:
    """The third-party package whose absence stopped the import of `target`'s module, if that is why it failed
    (not a name that does not exist: then the missing module is `target`'s own path)."""
    while exc is not None:
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            top = exc.name.split(".")[0]
            return None if top in ("apps", "common") or target.startswith(exc.name) else top
        exc = exc.__cause__ or exc.__context__
    return None


def is_allowed(target: str, patterns: tuple[str, ...]) -> bool:
    """Whether `target` names an exact entry of `patterns`, or a class defined under one of its wildcards."""
    if not isinstance(target, str) or not _matches(target, patterns):
        return False
    if target in patterns:
        return True
    try:
        obj = get_object(target)
    except Exception as exc:  # not importable: refused like any unknown name, unless a package it needs is missing
        missing = _missing_package(target, exc)
        if missing is not None:
            raise ManyheadsError(
                f"{target} needs the package {missing!r}, which is not installed here (make setup installs it)"
            ) from exc
        return False
    if isinstance(obj, ModuleType) or not isinstance(obj, type):
        return False
    qualname, module = getattr(obj, "__qualname__", ""), getattr(obj, "__module__", None)
    return "." not in qualname and isinstance(module, str) and _matches(f"{module}.{qualname}", patterns)


def _nodes(cfg, path: str = ""):
    """(key path, mapping) for every mapping in a plain config tree."""
    if isinstance(cfg, dict):
        yield path, cfg
        for key, value in cfg.items():
            yield from _nodes(value, f"{path}.{key}" if path else str(key))
    elif isinstance(cfg, list):
        for i, value in enumerate(cfg):
            yield from _nodes(value, f"{path}[{i}]")


def _plain(cfg):
    return OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, (DictConfig, ListConfig)) else cfg


def check_targets(cfg, allowed: tuple[str, ...], source: str, section: str = "") -> None:
    """Raise UnsafeFileError naming the key if any `_target_` in `cfg` is not allowed by `allowed`."""
    for path, node in _nodes(_plain(cfg), section):
        target = node.get("_target_")
        if target is not None and not is_allowed(target, allowed):
            raise UnsafeFileError(
                f"{source}: refused to instantiate {_key(path, '_target_')}={target!r}: "
                "not a model, data or module class, factory or predictor of the apps, nor an optimiser, "
                "scheduler or Lightning trainer, callback or logger (common/pipeline/safety.py)"
            )


def _at(tree, path: str):
    """The node of `tree` at a key path written by `_nodes` (None where there is none)."""
    node = tree
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            index = int(part[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return node


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def refuse_interpolations(cfg, source: str) -> None:
    """Stored configs are written resolved: an `${...}` in one was put there by hand and could call resolvers."""
    for path, node in _nodes(_plain(cfg)):
        for key, value in node.items():
            if isinstance(value, str) and "${" in value:
                raise UnsafeFileError(
                    f"{source}: refused {_key(path, key)}={value!r}: stored configs hold no interpolations"
                )


def check_stored(stored, trusted, source: str, section: str = "") -> None:
    """A stored config supplies values, never code: every `_target_` in `stored` (the config at `section`) must be
    the one `trusted` (the repository's config for the app, at the same place) has at that key path."""
    trusted = _plain(trusted)
    for path, node in _nodes(_plain(stored), section):
        target = node.get("_target_")
        if target is None or is_allowed(target, STORED_FREE_TARGETS):
            continue
        expected = _at(trusted, path.removeprefix(section))
        want = expected.get("_target_") if isinstance(expected, dict) else None
        if want != target:
            raise UnsafeFileError(
                f"{source}: refused {_key(path, '_target_')}={target!r}: a stored config supplies values, not code; "
                f"the repository's config for this app has {want!r} there"
            )


def hydra_whitelist():
    """The context an entry point's `main()` runs in, so that Hydra's own instantiation is allow-listed too."""
    return execution_whitelist(list(HYDRA_TARGETS))


def safe_instantiate(cfg, *, section: str, allowed: tuple[str, ...] = TRAIN_TARGETS, source: str = "config", **kwargs):
    """Instantiate `cfg` after checking its targets; a ConfigError inside gets the key prefixed by `section`."""
    check_targets(cfg, allowed, source, section)
    try:
        return instantiate(cfg, _execution_whitelist_=list(allowed), **kwargs)
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
