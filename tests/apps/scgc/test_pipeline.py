"""SCGC through the real Hydra config: train, checkpoint, resume, eval, export, load, predict; a killed run
resumes to the same result; bad config values and datasets fail clearly."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from common.pipeline.export import load
from common.pipeline.safety import load_checkpoint
from tests.conftest import REPO, run_cli, side_by_side

# A small SCGC run: the digits kNN graph, a few epochs, a short pre-training.
SMALL = [
    "app=scgc",
    "trainer=cpu",
    "data.dataset=digits_knn",
    "module.pretrain_epochs=2",
    "module.kmeans_n_init=2",
    "module.contrastive_warmup_epochs=2",
    "module.warmup_kmeans_epochs=[1]",
    "callbacks.progress_bar=null",
]
EPOCHS = 8  # of the shared run: long enough to kill a second run of the same arguments in the middle
WHOLE = [*SMALL, "seed=7"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(root, metrics.json) of one uninterrupted run of WHOLE for EPOCHS epochs: the run folder that the contract
    and export tests read, and the reference result of the killed-run test."""
    root = tmp_path_factory.mktemp("scgc")
    run_cli("train", *WHOLE, f"max_epochs={EPOCHS}", root=root)
    return root, json.loads(next((root / "runs" / "scgc").glob("2*/metrics.json")).read_text())


def test_run_folder_contract(trained):
    root, _ = trained
    run = (root / "runs" / "scgc" / "latest").resolve()
    for rel in (
        "config.yaml",
        ".hydra/config.yaml",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "metrics.json",
        "logs/csv/metrics.csv",
        "plots/learning_curves.png",
        "plots/tsne.png",
    ):
        assert (run / rel).is_file(), rel
    assert any((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {
        "app",
        "dataset",
        "monitor",
        "val",
        "test",
        "epochs",
        "steps",
        "train_seconds",
        "train_samples_per_s",
        "device",
        "versions",
    }
    assert metrics["app"] == "scgc" and metrics["dataset"] == "digits_knn" and metrics["epochs"] == EPOCHS
    assert set(metrics["test"]) >= {"acc", "nmi", "ari", "f1"}
    assert metrics["monitor"]["name"] == "train/loss" and metrics["monitor"]["best"] is not None
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["in_dim"] == 64 and config["model"]["n_clusters"] == 10  # filled from the data
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")  # weights_only
    assert ckpt["manyheads"]["config"]["app_name"] == "scgc"


def test_eval_export_predict(trained, tmp_path):
    """(`ckpt_path=last` resuming in the run's own folder is test_killed_run_resumes_to_the_uninterrupted_result's.)"""
    root, _ = trained
    run = (root / "runs" / "scgc" / "latest").resolve()
    proc, _ = side_by_side(  # evaluate and export each read the checkpoint on their own
        lambda: run_cli("evaluate", "app=scgc", root=root),
        lambda: run_cli("export", "app=scgc", root=root),
    )
    assert "test:" in proc.stdout
    evals = sorted((root / "runs" / "scgc" / "evaluate").glob("*/metrics.json"))
    assert evals and set(json.loads(evals[-1].read_text())["test"]) >= {"acc", "nmi"}

    export_dir = root / "exports" / "scgc"
    for name in ("model.safetensors", "model.yaml", "export.json", "README.md"):
        assert (export_dir / name).is_file(), name
    info = json.loads((export_dir / "export.json").read_text())
    assert info["app"] == "scgc" and info["graph"]["format"] in ("onnx", "pt2")
    assert (export_dir / info["graph"]["file"]).is_file()
    if info["graph"]["format"] == "pt2":
        assert info["graph"]["why_not_onnx"]

    # the export alone rebuilds the model: same outputs as the checkpoint's weights
    model = load(export_dir)
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    x = torch.rand(7, 64)
    q, z = model(x)
    assert torch.allclose(model.encoder[0].weight, state["model.encoder.0.weight"])
    assert q.shape == (7, 10) and z.shape[0] == 7 and torch.allclose(q.sum(1), torch.ones(7), atol=1e-5)

    from sklearn.datasets import load_digits

    features = tmp_path / "nodes.csv"
    np.savetxt(
        features, load_digits().data[:50], delimiter=",", header=",".join(f"f{i}" for i in range(64)), comments=""
    )
    out = tmp_path / "pred"
    run_cli("predict", "app=scgc", f"input={features}", f"export_dir={export_dir}", f"out={out}", root=tmp_path)
    lines = (out / "predictions.csv").read_text().strip().splitlines()
    assert len(lines) == 51


def test_killed_run_resumes_to_the_uninterrupted_result(trained, tmp_path):
    _, expected = trained  # the same arguments, run without interruption
    args = [*WHOLE, f"max_epochs={EPOCHS}"]

    killed = tmp_path / "killed"
    env = dict(os.environ, MANYHEADS_ROOT=str(killed))
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.pipeline.train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    last = None
    while time.time() < deadline and proc.poll() is None:
        found = list((killed / "runs" / "scgc").glob("*/checkpoints/last.ckpt"))
        if found:
            epoch = load_checkpoint(found[0])["epoch"]
            if epoch >= 3:  # in the middle: some epochs done, most still to go
                proc.send_signal(signal.SIGKILL)
                last = epoch
                break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert last is not None and last < EPOCHS - 1
    run_dir = next((killed / "runs" / "scgc").glob("2*"))
    assert not (run_dir / "metrics.json").exists()

    run_cli("train", *args, "ckpt_path=last", root=killed)
    assert (killed / "runs" / "scgc" / "latest").resolve() == run_dir  # resumed in its own folder
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["epochs"] == expected["epochs"] == EPOCHS and resumed["steps"] == expected["steps"]
    assert resumed["test"] == expected["test"]  # bit for bit: CPU, same seed, same ops, the random state restored


def test_test_ckpt_last_is_the_final_epoch(trained, tmp_path):
    """`test_ckpt: last` tests the final epoch even when the monitored metric never improves after epoch 0 (here
    `monitor.mode=max` on a falling loss; on two graphs train/loss did so, and last.ckpt stayed at epoch 0)."""
    _, expected = trained  # the same run with the loss improving: its last.ckpt is the final epoch's
    run_cli("train", *WHOLE, f"max_epochs={EPOCHS}", "monitor.mode=max", root=tmp_path)
    run = (tmp_path / "runs" / "scgc" / "latest").resolve()
    assert load_checkpoint(run / "checkpoints" / "best.ckpt")["epoch"] == 0
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == EPOCHS - 1
    assert json.loads((run / "metrics.json").read_text())["test"] == expected["test"]


def test_bad_config_value_names_the_key(tmp_path):
    def train(name, *args):  # each in its own root: the three start side by side
        return functools.partial(run_cli, "train", *SMALL, *args, root=tmp_path / name, check=False)

    variant, test_ckpt, tau = side_by_side(
        train("variant", "model.variant=nope"),
        train("test_ckpt", "module.tau=-1", "test_ckpt=middle"),
        train("tau", "module.tau=-1"),
    )
    assert variant.returncode == 2
    assert "model.variant='nope'" in variant.stderr and "scgc_star" in variant.stderr
    assert "Traceback" not in variant.stderr
    assert test_ckpt.returncode == 2
    assert "test_ckpt='middle'" in test_ckpt.stderr and "['best', 'last']" in test_ckpt.stderr
    assert tau.returncode == 2 and "module.tau=-1" in tau.stderr and "(0.0, inf]" in tau.stderr


def test_missing_dataset_names_path_and_card(tmp_path):
    missing = tmp_path / "nowhere"
    proc = run_cli(
        "train", *SMALL, "data.source=real", "data.dataset=usps", f"data.root={missing}", root=tmp_path, check=False
    )
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "data_cards/sdcn.md" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_refuses_a_missing_or_crafted_checkpoint(tmp_path):
    """Both fail where evaluate resolves and loads its checkpoint; they run side by side, each in its own root."""
    from tests.common.pipeline.test_safety import _RunsCode

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _RunsCode(marker)}, evil)
    missing, crafted = side_by_side(
        lambda: run_cli("evaluate", "app=scgc", root=tmp_path / "empty", check=False),
        lambda: run_cli("evaluate", "app=scgc", f"ckpt={evil}", root=tmp_path, check=False),
    )
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr
    assert "make train app=scgc" in missing.stderr
    assert crafted.returncode == 2 and "refused to load" in crafted.stderr
    assert not marker.exists()


def test_ddp_cpu_two_processes(tmp_path):
    """The distributed path: two processes over gloo train, checkpoint and write one metrics.json."""
    run_cli("train", *SMALL, "trainer=ddp_cpu", "max_epochs=2", root=tmp_path)
    runs = list((tmp_path / "runs" / "scgc").glob("2*/metrics.json"))
    assert len(runs) == 1
    metrics = json.loads(runs[0].read_text())
    assert metrics["epochs"] == 2 and set(metrics["test"]) >= {"acc", "nmi"}
    assert (runs[0].parent / "checkpoints" / "last.ckpt").is_file()
