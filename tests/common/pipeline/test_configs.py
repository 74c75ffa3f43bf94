"""Every app composes with every trainer, and every experiment and sweep composes (LHT's config tests)."""

from __future__ import annotations

import inspect

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from common.pipeline.predict import app_predictor
from common.pipeline.runs import CONFIG_DIR, REPO_ROOT, known_apps, register_resolvers

register_resolvers()
EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "configs" / "experiment").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (REPO_ROOT / "configs" / "sweep").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (REPO_ROOT / "configs" / "trainer").glob("*.yaml"))
DIRECTION = {"min": "minimize", "max": "maximize"}
# A sweep optimises the app's monitored metric, but for SCGC: its monitor, train/loss, is the label-free model
# selection; its sweep tunes with the labels (val/acc, see configs/sweep/scgc.yaml).
OBJECTIVE_NOT_MONITOR = {"scgc": ("val/acc", "maximize")}


def _compose(overrides: list[str], config_name: str = "train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("app", known_apps())
def test_app_composes_with_every_trainer(app, trainer):
    cfg = _compose([f"app={app}", f"trainer={trainer}"])
    assert cfg.app_name == app
    assert cfg.trainer._target_ == "lightning.Trainer" and cfg.trainer.max_epochs == cfg.max_epochs
    for key in ("model", "data", "module", "monitor"):
        assert key in cfg, f"configs/app/{app}.yaml lacks {key}"
    assert str(cfg.data._target_).startswith(("apps.", "common."))  # default dataset: see test_cards.py


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(experiment):
    app = next(a for a in known_apps() if experiment.startswith(a))
    cfg = _compose([f"app={app}", f"experiment={experiment}"])
    assert cfg.app_name == app


def test_every_app_has_a_sweep():
    assert known_apps() == SWEEPS


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweeps_compose_and_search_existing_keys(sweep):
    cfg = _compose([f"app={sweep}", f"sweep={sweep}"])
    absent = object()
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key, default=absent) is not absent, (
            f"sweep {sweep} searches {key}, which the config lacks"
        )
    objective, direction = OBJECTIVE_NOT_MONITOR.get(sweep, (cfg.monitor.name, DIRECTION[cfg.monitor.mode]))
    assert (cfg.optimized_metric, cfg.hydra.sweeper.direction) == (objective, direction)
    assert cfg.hydra.sweeper.study_name == sweep and cfg.hydra.sweeper.sampler.seed is not None


@pytest.mark.parametrize("name", ["eval", "export", "predict"])
def test_tool_configs_compose(name):
    extra = ["input=x.csv"] if name == "predict" else []
    for app in known_apps():
        assert _compose([f"app={app}", *extra], config_name=name).app_name == app


@pytest.mark.parametrize("app", known_apps())
def test_every_app_names_its_predictor_in_the_repository_config(app):
    predictor = app_predictor(app)
    assert predictor.func.__module__.startswith(("apps.", "common.")), predictor
    assert list(inspect.signature(predictor).parameters)[:4] == ["model", "input_path", "out_dir", "spec"]


@pytest.mark.parametrize(
    "overrides, precision",
    [
        (["trainer=default"], "32"),
        (["trainer=gpu"], "32"),  # the app's key wins over the trainer group's bf16-mixed
        (["trainer=gpu", "trainer.precision=bf16-mixed"], "bf16-mixed"),  # the command line wins over both
        (["trainer=gpu", "experiment=probe_bf16"], "bf16-mixed"),  # and so does an experiment
    ],
)
def test_an_apps_trainer_keys_win_over_the_trainer_group(tmp_path, overrides, precision):
    """An app that must keep a trainer setting (nestedmorph: fp32, bf16 diverges) sets `trainer:` keys in its
    config; they win over `trainer=gpu`, and lose to the command line and to an experiment."""
    (tmp_path / "app").mkdir()
    (tmp_path / "experiment").mkdir()
    app = "# @package _global_\napp_name: probe\ntrainer: {precision: '32', gradient_clip_val: 1.0}\n"
    (tmp_path / "app" / "probe.yaml").write_text(app)
    (tmp_path / "experiment" / "probe_bf16.yaml").write_text("# @package _global_\ntrainer: {precision: bf16-mixed}\n")
    cfg = _compose([f"hydra.searchpath=[file://{tmp_path}]", "app=probe", *overrides])
    assert cfg.trainer.precision == precision and cfg.trainer.gradient_clip_val == 1.0
    assert cfg.trainer._target_ == "lightning.Trainer"
