from __future__ import annotations

import pytest
from torch import nn

from common.utils.modes import eval_mode, train_mode


def _net() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(2)))
    net[2].eval()  # a frozen block inside a training model keeps its own mode
    return net


def _modes(net: nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


def test_eval_mode_sets_every_submodule_and_restores_each_one():
    net = _net()
    before = _modes(net)
    with eval_mode(net) as inside:
        assert inside is net and not any(_modes(net))
    assert _modes(net) == before == [True, True, True, False, False]


def test_eval_mode_restores_when_the_body_raises():
    net = _net()
    before = _modes(net)
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("plot failed")
    assert _modes(net) == before


def test_train_mode_from_eval_and_back():
    net = _net().eval()
    with pytest.raises(KeyboardInterrupt), train_mode(net):
        assert all(_modes(net))
        raise KeyboardInterrupt
    assert not any(_modes(net))
