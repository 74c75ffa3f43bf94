"""Trainer config values are checked against Lightning's argument types before the trainer exists."""

from __future__ import annotations

import lightning as L
import pytest
from hydra import compose, initialize_config_dir

from common.errors import ConfigError
from common.pipeline.build import build_trainer
from common.pipeline.runs import CONFIG_DIR


def _trainer_cfg(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR):
        return compose(config_name="train", overrides=["app=scgc", *overrides]).trainer


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("max_epochs=abc", "trainer.max_epochs", "int or None"),
        ("max_epochs=1.5", "trainer.max_epochs", "int or None"),
        ("max_epochs=true", "trainer.max_epochs", "int or None"),  # a bool is not a count
        ("+trainer.limit_train_batches=half", "trainer.limit_train_batches", "int or float or None"),
        ("+trainer.precision=17", "trainer.precision", "'bf16-mixed'"),
        ("+trainer.detect_anomaly=maybe", "trainer.detect_anomaly", "bool"),
    ],
)
def test_a_wrongly_typed_trainer_value_is_a_config_error(override, key, expected):
    with pytest.raises(ConfigError, match=f"bad config value {key}=.*expected .*{expected}") as info:
        build_trainer(_trainer_cfg(override))
    assert info.value.key == key


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp", "ddp_cpu"])
def test_every_trainer_config_passes_the_check(trainer):
    from common.pipeline.arguments import check_arguments

    check_arguments(_trainer_cfg(f"trainer={trainer}", "max_epochs=3"), L.Trainer.__init__, "trainer")


def test_a_good_trainer_is_built_with_the_values_given():
    trainer = build_trainer(_trainer_cfg("max_epochs=3", "+trainer.limit_train_batches=0.5"), logger=False)
    assert trainer.max_epochs == 3 and trainer.limit_train_batches == 0.5
