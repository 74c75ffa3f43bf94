"""Resuming a run: the config it continues with."""

from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf, open_dict

from common.errors import ManyheadsError


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
