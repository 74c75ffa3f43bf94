"""`make sweep app=NAME` end to end: a 2-trial Optuna sweep of a tiny configuration, for one app per domain,
prints and stores the best of its trials; a study stored in SQLite resumes (a second sweep adds its trial to
the study, samples a new point, and reports the best of both)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import run_cli, side_by_side

QUIET = ["trainer=cpu", "test=false", "callbacks.plots=null", "hydra.sweeper.n_trials=2"]
# One app per domain, each cut to seconds a trial. A fixed override of a searched key (e.g. focus_detr's
# hidden_dim) takes that key out of the search; the paper's knobs that are cheap stay searched.
TINY = {
    "focus_detr": [  # detection: keep_ratio, cascade fractions, weight_select and lr searched
        "data.num_train=16",
        "data.num_val=8",
        "data.num_test=8",
        "data.batch_size=8",
        "max_epochs=1",
        "model.hidden_dim=32",
        "model.num_heads=4",
        "model.ffn_dim=64",
        "model.num_decoder_layers=2",
        "model.num_queries=20",
        "model.num_attn_tokens=16",
        "model.out_indices=[3,4]",
        "model.num_levels=2",
        "module.criterion.size_ranges=[[-1,24],[24,1e9]]",
    ],
    "biformer": ["data.limit_train=128", "data.limit_eval=64", "data.batch_size=32", "max_epochs=1"],  # vision
    "crypto_forecast": [  # forecasting
        "data.limit_rows=300",
        "data.lookback=10",
        "max_epochs=1",
        "model.dim=16",
        "model.lstm_hidden=8",
    ],
    "scgc": [  # graph
        "data.dataset=digits_knn",
        "module.pretrain_epochs=2",
        "module.kmeans_n_init=2",
        "module.contrastive_warmup_epochs=2",
        "module.warmup_kmeans_epochs=[1]",
        "max_epochs=2",
    ],
}
RESUMED = "crypto_forecast"  # the cheapest app runs the SQLite study


def sweep(app: str, root: Path, *extra: str):
    return run_cli("train", "-m", f"app={app}", f"sweep={app}", *QUIET, *TINY[app], *extra, root=root)


def resume_twice(root: Path) -> list:
    storage = f"sqlite:///{root / 'study.db'}"
    args = [f"hydra.sweeper.storage={storage}", "hydra.sweeper.sampler.seed=null", "hydra.sweeper.n_trials=1"]
    return [sweep(RESUMED, root, *args), sweep(RESUMED, root, *args)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every sweep of this file, two processes at a time: {app: (root, proc)} and the two resumed sweeps."""
    roots = {app: tmp_path_factory.mktemp(app) for app in TINY}
    resume_root = tmp_path_factory.mktemp("resumed")
    *procs, resumed = side_by_side(
        *(lambda app=app: sweep(app, roots[app]) for app in TINY), lambda: resume_twice(resume_root)
    )
    return {app: (roots[app], proc) for app, proc in zip(TINY, procs)}, (resume_root, resumed)


def objective(trial_dir: Path, name: str) -> float:
    split, _, key = name.partition("/")
    return json.loads((trial_dir / "metrics.json").read_text())[split][key]


def searched(trial_dir: Path) -> dict:
    """The trial's `key=value` overrides as strings (Hydra's record of what the sweeper chose)."""
    return dict(o.split("=", 1) for o in yaml.safe_load((trial_dir / ".hydra" / "overrides.yaml").read_text()))


def check_printed(stdout: str, metric: str, best: dict) -> None:
    assert f"best trial ({metric} = {best['best_value']}):" in stdout
    for key, value in best["best_params"].items():
        assert re.search(rf"^  {re.escape(key)}={re.escape(str(value))}$", stdout, re.M), key


@pytest.mark.parametrize("app", list(TINY))
def test_sweep_prints_and_stores_the_best_of_two_trials(runs, app):
    root, proc = runs[0][app]
    (folder,) = (root / "runs" / app / "multirun").iterdir()
    best = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    metric = yaml.safe_load((folder / "0" / ".hydra" / "config.yaml").read_text())["optimized_metric"]
    sweeper = yaml.safe_load((folder / "0" / ".hydra" / "hydra.yaml").read_text())["hydra"]["sweeper"]
    trials = sorted(p.parent for p in folder.glob("*/metrics.json"))
    assert [t.name for t in trials] == ["0", "1"]
    values = [objective(t, metric) for t in trials]
    pick = min if sweeper["direction"] == "minimize" else max
    assert best["best_value"] == pick(values)
    winner = trials[values.index(best["best_value"])]
    assert best["best_params"] and set(best["best_params"]) <= set(sweeper["params"])
    for key, value in best["best_params"].items():
        assert searched(winner)[key] == str(value), key
    check_printed(proc.stdout, metric, best)
    assert not (root / "runs" / app / "latest").exists()  # sweeps do not move `latest`


def test_a_sqlite_study_resumes_and_reports_the_best_of_both_runs(runs):
    root, (first, second) = runs[1]
    study = optuna.load_study(study_name=RESUMED, storage=f"sqlite:///{root / 'study.db'}")
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert [t.number for t in trials] == [0, 1]
    assert trials[0].params != trials[1].params  # the second sweep went on, it did not repeat the first point
    folders = sorted((root / "runs" / RESUMED / "multirun").iterdir())
    assert len(folders) == 2
    for folder, trial in zip(folders, trials):  # each sweep's one trial is the study's trial of that number
        assert objective(folder / "0", "val/rmse") == trial.value
    best = yaml.safe_load((folders[1] / "optimization_results.yaml").read_text())
    assert best["best_value"] == min(t.value for t in trials)
    assert best["best_params"] == min(trials, key=lambda t: t.value).params
    check_printed(second.stdout, "val/rmse", best)
