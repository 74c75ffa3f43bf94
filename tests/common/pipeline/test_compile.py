"""`compile=`: one switch for every app; the model's forward is compiled in place, its weights' names unchanged."""

from __future__ import annotations

import importlib
import inspect

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


class _TrainsThroughAnotherMethod(torch.nn.Module):
    TRAINING_METHOD = "forward_train"

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.linear(x)

    def forward_train(self, x):
        return self.linear(x).sum()


def test_compile_reaches_the_method_training_goes_through():
    model = _TrainsThroughAnotherMethod()
    keys = list(model.state_dict())
    compile_model(model, True)
    assert model._compiled_call_impl is not None
    assert getattr(model.forward_train, "_torchdynamo_orig_callable", None) is not None  # torch.compile's wrapper
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize(
    "model_class, module_class",
    [
        ("common.detection.detector:DINODetector", "common.detection.module:DetectionModule"),
        ("apps.stockformer.model:Stockformer", "apps.stockformer.module:StockformerModule"),
        ("apps.crypto_forecast.model:CryptoForecaster", "apps.crypto_forecast.module:CryptoForecastModule"),
        ("apps.lina_speech.model:LinaSpeech", "apps.lina_speech.module:LinaSpeechModule"),
    ],
)
def test_models_name_the_method_their_module_trains_through(model_class, module_class):
    """Without `TRAINING_METHOD`, compile=true would compile only a forward that training never calls."""
    model, module = (
        getattr(importlib.import_module(m), c) for m, c in (x.split(":") for x in (model_class, module_class))
    )
    assert f"self.model.{model.TRAINING_METHOD}(" in inspect.getsource(module)
