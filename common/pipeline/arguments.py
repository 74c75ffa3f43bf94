"""Config values checked against the annotations of the callable they go to, before it runs: `max_epochs=abc`
is a ConfigError naming `trainer.max_epochs` and the type expected, not an assertion deep in a training loop."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from common.errors import ConfigError


def fits(value, annotation) -> bool:
    """Whether a plain config value can be what `annotation` asks for (types outside plain data pass)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in typing.get_args(annotation))
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation in (int, float) and isinstance(value, bool):
        return False
    if annotation is float:
        return isinstance(value, (int, float))
    if isinstance(value, dict) and "_target_" in value:
        return True  # an object built from its own config; its target is checked where it is instantiated
    try:
        return isinstance(value, origin or annotation)
    except TypeError:  # a typing construct isinstance cannot judge
        return True


def describe(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation)


def check_arguments(cfg: DictConfig, fn, section: str, given=()) -> None:
    """Raise ConfigError for the first key of `cfg` whose value does not fit `fn`'s annotation of that argument
    (keys in `given`, passed by the caller instead, are left out)."""
    hints = typing.get_type_hints(fn)
    for key in cfg:
        if key not in hints or key in given:
            continue
        value = cfg[key]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        if not fits(value, hints[key]):
            raise ConfigError(f"{section}.{key}", value, describe(hints[key]))
