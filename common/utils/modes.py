"""Train/eval mode for the length of a block, restored afterwards even when the block raises."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def train_mode(module: nn.Module, training: bool = True) -> Iterator[nn.Module]:
    """Put `module` (all its submodules) in training or eval mode; on exit give every submodule its own mode back."""
    modes = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def eval_mode(module: nn.Module):
    """`with eval_mode(model):` dropout off, norms on running statistics; the previous modes come back after."""
    return train_mode(module, False)
