"""SCGCModule with a plain lightning.Trainer: argument checks, exact resume, plots, and that it learns."""

import functools

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from apps.scgc.data import SCGCDataModule
from apps.scgc.metrics import clustering_metrics
from apps.scgc.model import SCGC
from apps.scgc.module import SCGCModule
from common.errors import ConfigError

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
TINY = {"hidden": (32, 32, 64), "n_z": 8}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads can run 20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("scgc_data"))


def trainer(max_epochs, **kwargs):
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"alpha": -1.0}, "alpha"),
        ({"beta": -0.1}, "beta"),
        ({"order": 0}, "order"),
        ({"order": 1.5}, "order"),
        ({"tau": 0.0}, "tau"),
        ({"influence": "yes"}, "influence"),
        ({"pretrain_epochs": -1}, "pretrain_epochs"),
        ({"pretrain_lr": 0.0}, "pretrain_lr"),
        ({"kmeans_n_init": 0}, "kmeans_n_init"),
    ],
)
def test_bad_arguments_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        SCGCModule(SCGC(8, 3, **TINY), ADAM, **kwargs)
    assert err.value.key == key


def test_influence_follows_the_variant():
    assert SCGCModule(SCGC(8, 3, variant="scgc_star", **TINY), ADAM).influence is True
    assert SCGCModule(SCGC(8, 3, **TINY), ADAM).influence is False
    assert SCGCModule(SCGC(8, 3, **TINY), ADAM, influence=True).influence is True


def fit(data_dir, tmp_path, max_epochs, batch_size, variant, ckpt_path=None):
    L.seed_everything(7, verbose=False)
    dm = SCGCDataModule(dataset="digits_knn", data_dir=data_dir, batch_size=batch_size, seed=7)
    module = SCGCModule(SCGC(64, 10, variant=variant, **TINY), ADAM, order=2, tau=0.5, pretrain_epochs=2, seed=7)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    trainer(max_epochs, callbacks=[ckpt]).fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module


@pytest.mark.parametrize("batch_size, variant", [(None, "scgc"), (700, "scgc_star")])
def test_resume_from_last_checkpoint_is_exact(data_dir, tmp_path, batch_size, variant):
    whole = fit(data_dir, tmp_path / "a", 4, batch_size, variant)
    fit(data_dir, tmp_path / "b", 2, batch_size, variant)
    resumed = fit(data_dir, tmp_path / "b", 4, batch_size, variant, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(whole.p, resumed.p) and whole.p_epoch == resumed.p_epoch == 3
    assert bool(resumed.centres_initialised) and torch.isfinite(resumed.val_best).all()


def test_make_plots_writes_tsne(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 15)
    np.savetxt(tmp_path / "usps.txt", rng.normal(size=(45, 6)) + 3 * y[:, None])
    np.savetxt(tmp_path / "usps_label.txt", y, fmt="%d")
    dm = SCGCDataModule(dataset="usps", source="real", root=str(tmp_path), data_dir=str(tmp_path / "cache"))
    module = SCGCModule(SCGC(6, 3, variant="scgc_star", **TINY), ADAM, pretrain_epochs=2)
    t = trainer(2, enable_checkpointing=False)
    t.fit(module, datamodule=dm)
    (result,) = t.test(module, datamodule=dm, verbose=False)
    assert {"test/acc", "test/nmi", "test/ari", "test/f1", "test/pretrain_kmeans_acc"} <= set(result)
    (path,) = module.make_plots(tmp_path / "plots", dm)
    assert path.name == "tsne.png" and path.stat().st_size > 1000


def test_scgc_star_learns_digits(data_dir):
    """SCGC* with the paper's USPS-style knobs on digits_knn, 30 pre-training + 40 epochs (~30 s, 1 thread).

    Margins: final-epoch ACC must be >= 0.65, at least 0.5 above the majority-class ACC (0.10) and at
    least 0.10 above KMeans on the embedding of the same, untrained encoder (~0.5 on these seeds).
    """
    L.seed_everything(0, verbose=False)
    dm = SCGCDataModule(dataset="digits_knn", data_dir=data_dir, seed=0)
    dm.setup("fit")
    model = SCGC(**dm.model_kwargs(), variant="scgc_star")
    x, y = dm.graph.x, dm.graph.y.numpy()
    with torch.no_grad(), threadpool_limits(limits=1, user_api="openmp"):
        random_z = model.encode(x).numpy()
        random_acc = clustering_metrics(y, KMeans(10, n_init=10, random_state=0).fit_predict(random_z))["acc"]
    majority = np.bincount(y).max() / len(y)

    module = SCGCModule(model, ADAM, alpha=1.0, beta=0.1, order=4, tau=0.5, pretrain_epochs=30, seed=0)
    t = trainer(40, enable_checkpointing=False)
    t.fit(module, datamodule=dm)
    (result,) = t.test(module, datamodule=dm, verbose=False)
    acc = result["test/acc"]
    assert acc >= 0.65, result
    assert acc >= majority + 0.5, (acc, majority)
    assert acc >= random_acc + 0.10, (acc, random_acc)
    assert result["test/nmi"] >= 0.6, result
