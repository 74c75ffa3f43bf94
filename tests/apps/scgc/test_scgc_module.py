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
        ({"contrastive_warmup_epochs": -1}, "contrastive_warmup_epochs"),
        ({"contrastive_warmup_epochs": 2.5}, "contrastive_warmup_epochs"),
        ({"kmeans_select": "best"}, "kmeans_select"),
        ({"kmeans_select": "inertia", "warmup_kmeans_epochs": [3]}, "warmup_kmeans_epochs"),
        ({"kmeans_select": "silhouette", "warmup_kmeans_epochs": [0]}, "warmup_kmeans_epochs"),
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
    module = SCGCModule(
        SCGC(64, 10, variant=variant, space="sphere", **TINY),
        ADAM,
        order=2,
        tau=0.5,
        pretrain_epochs=2,
        contrastive_warmup_epochs=2,
        seed=7,
    )
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


def block_graph(root, n_per=40, k=4, seed=0):
    """SDCN files for a 4-block graph whose features barely show the blocks: the graph carries the clusters.

    Features: 6 dims, N(0, 1) plus a block offset of 0.35 in one dim per block (weak signal); edges: each node
    to 6 random nodes of its own block and 1 random node elsewhere.
    """
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per)
    x = rng.normal(size=(len(y), 6))
    x[np.arange(len(y)), y] += 0.35
    edges = []
    for i in range(len(y)):
        same, other = np.flatnonzero(y == y[i]), np.flatnonzero(y != y[i])
        edges += [(i, j) for j in rng.choice(same[same != i], 6, replace=False)] + [(i, rng.choice(other))]
    np.savetxt(root / "usps.txt", x)
    np.savetxt(root / "usps_label.txt", y, fmt="%d")
    np.savetxt(root / "usps_graph.txt", np.array(edges), fmt="%d")
    dm = SCGCDataModule(dataset="usps", source="real", root=str(root), data_dir=str(root / "cache"))
    dm.setup("fit")
    return dm


def init_after_pretraining(dm, warmup_epochs, space):
    """(KMeans ACC, L_NC of z) right after `pretrain_and_init_centres`, i.e. at the start of SCGC training.

    SCGC* (the warm-up is L_NC alone), tau 3 and lr 1e-2 so that a tiny graph shows the effect in ~100 steps.
    """
    torch.manual_seed(0)
    module = SCGCModule(
        SCGC(6, 4, variant="scgc_star", space=space, **TINY),
        ADAM,
        alpha=2.0,
        order=2,
        tau=3.0,
        pretrain_epochs=10,
        pretrain_lr=1e-2,
        pretrain_batch_size=64,
        contrastive_warmup_epochs=warmup_epochs,
        seed=0,
    )
    module._datamodule = lambda: dm  # no Trainer needed for this step
    module.pretrain_and_init_centres()
    x = dm.full_batch()["x"]
    with torch.no_grad():
        nc = module._contrastive_loss(module.model.encode(x), torch.arange(x.shape[0])).item()
    return module.init_metrics[0].item(), nc


def test_contrastive_warmup_gives_kmeans_the_graph(tmp_path):
    """On a graph whose features barely separate the blocks, 100 warm-up epochs lower L_NC and lift the KMeans
    ACC that initialises the centres from near chance to most of the blocks; KMeans on the normalised z (the
    cosine geometry L_NC shapes) beats KMeans on raw z. Measured on this seed: ACC 0.34 -> 0.91 (raw z: 0.74),
    L_NC 4.38 -> 3.53. Margins: L_NC at least 10% lower, ACC >= 0.75 and at least 0.3 above no warm-up, the
    normalised KMeans at least 0.05 above the raw one. ~1 s on one thread."""
    dm = block_graph(tmp_path)
    acc0, nc0 = init_after_pretraining(dm, 0, space="raw")
    acc_raw, _ = init_after_pretraining(dm, 100, space="raw")
    acc1, nc1 = init_after_pretraining(dm, 100, space="sphere")
    assert nc1 < 0.9 * nc0, (nc0, nc1)
    assert acc1 >= 0.75 and acc1 >= acc0 + 0.3, (acc0, acc1)
    assert acc1 >= acc_raw + 0.05, (acc_raw, acc1)


def test_sphere_space_starts_from_the_kmeans_partition(tmp_path):
    """With space="sphere", KMeans runs on z/|z|, z_scale is the mean |z|, mu is z_scale times the KMeans centres,
    and the first argmax q is exactly the KMeans partition (q compares z_scale * z/|z| with mu)."""
    dm = block_graph(tmp_path)
    module = SCGCModule(SCGC(6, 4, space="sphere", **TINY), ADAM, pretrain_epochs=1, seed=0)
    module._datamodule = lambda: dm
    module.pretrain_and_init_centres()
    x = dm.full_batch()["x"]
    with torch.no_grad():
        q, z = module.model(x)
    with threadpool_limits(limits=1, user_api="openmp"):
        km = KMeans(4, n_init=20, random_state=0).fit(torch.nn.functional.normalize(z, dim=1).double())
    assert module.model.z_scale.item() == pytest.approx(z.norm(dim=1).mean().item(), rel=1e-5)
    expected = module.model.z_scale * torch.as_tensor(km.cluster_centers_, dtype=torch.float32)
    torch.testing.assert_close(module.model.mu.detach(), expected, rtol=1e-5, atol=1e-5)
    assert len(set(km.labels_.tolist())) == 4
    np.testing.assert_array_equal(q.argmax(1).numpy(), km.labels_)


def test_silhouette_rule_keeps_the_restart_with_the_best_silhouette(monkeypatch):
    """kmeans_select=silhouette runs kmeans_n_init single-init KMeans fits and keeps the one whose partition has
    the highest silhouette (not the lowest inertia); the restarts must differ, or there is nothing to select."""
    import sklearn.cluster
    from sklearn.datasets import make_blobs
    from sklearn.metrics import silhouette_score

    fits = []

    class Recorded(sklearn.cluster.KMeans):
        def fit(self, *args, **kwargs):
            fits.append(super().fit(*args, **kwargs))
            return fits[-1]

    monkeypatch.setattr(sklearn.cluster, "KMeans", Recorded)
    z, _ = make_blobs(n_samples=300, centers=10, cluster_std=0.6, center_box=(-8, 8), random_state=3)
    module = SCGCModule(SCGC(6, 10, **TINY), ADAM, kmeans_n_init=6, kmeans_select="silhouette", seed=0)
    chosen, score = module._kmeans(z)
    assert len(fits) == 6 and all(f.n_init == 1 for f in fits)
    scores = [silhouette_score(z, f.labels_) for f in fits]
    assert len({round(s, 6) for s in scores}) > 1, "the restarts found one partition: the test proves nothing"
    assert chosen is fits[int(np.argmax(scores))] and score == pytest.approx(max(scores))


def test_warmup_returns_to_the_epoch_of_the_best_silhouette(tmp_path):
    """With warmup_kmeans_epochs, KMeans runs after those warm-up epochs and after the last; the model is put back
    to the epoch whose partition scored best, and that partition (not a new KMeans) initialises the centres."""
    dm = block_graph(tmp_path)
    module = SCGCModule(
        SCGC(6, 4, space="sphere", **TINY), ADAM, pretrain_epochs=1, contrastive_warmup_epochs=6,
        kmeans_select="silhouette", kmeans_n_init=2, warmup_kmeans_epochs=[2, 4, 9], seed=0,
    )  # fmt: skip
    module._datamodule = lambda: dm
    real_kmeans, calls = module._kmeans, []
    fake_scores = [0.2, 0.9, 0.1]  # epochs 2, 4, 6 (9 is past the warm-up: ignored)

    def scored_kmeans(z):
        fit, _ = real_kmeans(z)
        calls.append(({k: v.clone() for k, v in module.model.encoder.state_dict().items()}, fit))
        return fit, fake_scores[len(calls) - 1]

    module._kmeans = scored_kmeans
    module.pretrain_and_init_centres()
    assert len(calls) == 3
    state, fit = calls[1]
    for k, v in module.model.encoder.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert not torch.equal(calls[1][0]["0.weight"], calls[2][0]["0.weight"]), "the warm-up did not move the encoder"
    torch.testing.assert_close(
        module.model.mu.detach(), module.model.z_scale * torch.as_tensor(fit.cluster_centers_, dtype=torch.float32)
    )


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
