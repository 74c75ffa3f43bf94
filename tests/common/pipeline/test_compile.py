"""`compile=`: one switch for every app; the model's forward is compiled in place, its weights' names unchanged."""

from __future__ import annotations

import pytest
import torch

from common.errors import ConfigError
from common.pipeline.build import compile_model
from tests.common.pipeline.test_configs import _compose


@pytest.mark.parametrize("mode", [True, "reduce-overhead"])
def test_compile_wraps_the_forward_and_keeps_checkpoint_keys(mode):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4))
    keys = list(model.state_dict())
    compile_model(model, mode)
    assert model._compiled_call_impl is not None
    assert list(model.state_dict()) == keys  # a compiled run's checkpoints load into a plain model


def test_compile_is_off_by_default_and_bad_modes_are_named():
    assert _compose(["app=scgc"]).compile is False
    model = torch.nn.Linear(3, 4)
    compile_model(model, False)
    assert model._compiled_call_impl is None
    with pytest.raises(ConfigError, match="compile"):
        compile_model(model, "fastest")
