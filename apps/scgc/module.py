"""SCGCModule: pre-training, KMeans centre initialisation, and SCGC / SCGC* self-supervised training.

Loss per step (on a batch of nodes B; the full graph by default):

    SCGC : beta * KL(p || q) + alpha * L_NC(z, T) + MSE(decode(z), x)     T = Â^r
    SCGC*: beta * KL(p || q) + alpha * L_NC(z, T)                         T = Â + ... + Â^r (IAC)

- p (DEC's target distribution) is refreshed once per epoch from a pass over all nodes, before the
  first update of the epoch (in full-batch mode that pass *is* the training forward, as the weights
  have not moved yet). It is kept in the buffer `p` and saved in checkpoints.
- Before the first epoch (`on_fit_start`), unless the `centres_initialised` buffer says it is done
  (restored from a checkpoint), the autoencoder is pre-trained on reconstruction MSE (SCGC* uses a
  temporary decoder, dropped afterwards) and KMeans on z initialises the centres `mu`. The official
  code loads SDCN's pre-trained `.pkl` instead; here the pre-training is part of the run.
- Contrastive warm-up (an app deviation, `contrastive_warmup_epochs`, 0 = the paper's recipe): between the
  pre-training and KMeans, W epochs of the training loss without its KL term (alpha * L_NC, + MSE for SCGC),
  so KMeans sees a graph-aware embedding. On Cora, KMeans on the pre-trained AE embedding finds poor
  centres (ACC 0.36-0.46) that DEC then sharpens; after the warm-up KMeans alone reaches ~0.70.
  KMeans runs where q measures z (the model's `space`): on raw z, or on z/|z| for space="sphere"; there
  both z and the centres are scaled by mean |z| (the model's `z_scale`, set here), so argmax q starts as
  exactly the KMeans partition.
  `kmeans_select` picks the KMeans restart: lowest inertia (scikit-learn's rule, the paper) or highest
  silhouette (an app deviation: on Cora the lowest-inertia restart is sometimes a poor partition); with
  `warmup_kmeans_epochs` the silhouette also picks the warm-up epoch (label-free early stopping).
- Validation and test cluster every node (argmax q) and log ACC/NMI/ARI/F1 against the labels.
  `val/<metric>_max_over_epochs` is the official code's reported number (the best epoch chosen with
  the labels); the honest number is the final epoch's (`test/<metric>` with `test_ckpt: last`).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from apps.scgc.losses import (
    kl_loss,
    minibatch_contrastive_loss,
    neighbour_contrastive_loss,
    target_block,
    target_distribution,
    to_torch_sparse,
)
from apps.scgc.metrics import clustering_metrics
from apps.scgc.model import SCGC, build_decoder
from common.errors import ConfigError, check_range
from common.utils.modes import eval_mode, train_mode
from common.utils.schedulers import with_scheduler

METRICS = ("acc", "nmi", "ari", "f1")
DENSE_MAX_NODES = 8192  # full-batch target as a dense N×N tensor up to this size (faster), else torch sparse


class SCGCModule(L.LightningModule):
    def __init__(
        self,
        model: SCGC,
        optimizer,
        scheduler=None,
        alpha: float = 1.0,
        beta: float = 0.1,
        order: int = 2,
        tau: float = 1.0,
        influence: bool | None = None,
        pretrain_epochs: int = 30,
        pretrain_lr: float = 1e-3,
        pretrain_batch_size: int = 256,
        kmeans_n_init: int = 20,
        contrastive_warmup_epochs: int = 0,
        kmeans_select: str = "inertia",
        warmup_kmeans_epochs: list[int] | tuple[int, ...] = (),
        seed: int = 42,
    ):
        super().__init__()
        check_range("alpha", alpha, 0.0)
        check_range("beta", beta, 0.0)
        check_range("order", order, 1)
        if int(order) != order:
            raise ConfigError("order", order, "an integer >= 1")
        check_range("tau", tau, 0.0, low_inclusive=False)
        if influence not in (None, True, False):
            raise ConfigError("influence", influence, "true, false or null (null: true for SCGC*, false for SCGC)")
        check_range("pretrain_epochs", pretrain_epochs, 0)
        check_range("pretrain_lr", pretrain_lr, 0.0, low_inclusive=False)
        check_range("pretrain_batch_size", pretrain_batch_size, 1)
        check_range("kmeans_n_init", kmeans_n_init, 1)
        check_range("contrastive_warmup_epochs", contrastive_warmup_epochs, 0)
        if int(contrastive_warmup_epochs) != contrastive_warmup_epochs:
            raise ConfigError("contrastive_warmup_epochs", contrastive_warmup_epochs, "an integer >= 0 (0: no warm-up)")
        if kmeans_select not in ("inertia", "silhouette"):
            raise ConfigError("kmeans_select", kmeans_select, "inertia (scikit-learn's n_init) or silhouette")
        warmup_kmeans_epochs = list(warmup_kmeans_epochs or [])
        if warmup_kmeans_epochs and kmeans_select != "silhouette":
            raise ConfigError("warmup_kmeans_epochs", warmup_kmeans_epochs, "empty unless kmeans_select=silhouette")
        if not all(isinstance(e, int) and e >= 1 for e in warmup_kmeans_epochs):
            raise ConfigError("warmup_kmeans_epochs", warmup_kmeans_epochs, "a list of warm-up epochs (integers >= 1)")
        check_range("seed", seed)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.alpha, self.beta, self.order, self.tau = float(alpha), float(beta), int(order), float(tau)
        self.influence = (model.variant == "scgc_star") if influence is None else bool(influence)
        self.pretrain_epochs, self.pretrain_lr = int(pretrain_epochs), float(pretrain_lr)
        self.pretrain_batch_size = int(pretrain_batch_size)
        self.kmeans_n_init, self.seed = int(kmeans_n_init), int(seed)
        self.warmup_epochs = int(contrastive_warmup_epochs)
        # the end of the warm-up is always a candidate; epochs past it are ignored (a shorter warm-up stays valid)
        self.kmeans_select = kmeans_select
        self.warmup_kmeans_epochs = {e for e in warmup_kmeans_epochs if e < self.warmup_epochs}
        if self.warmup_kmeans_epochs:
            self.warmup_kmeans_epochs.add(self.warmup_epochs)

        self.register_buffer("centres_initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("val_best", torch.full((len(METRICS),), float("-inf")))
        self.register_buffer("init_metrics", torch.full((len(METRICS),), float("nan")))
        self.register_buffer("p", torch.empty(0), persistent=False)  # saved via on_save_checkpoint
        self.p_epoch = -1  # epoch whose start p belongs to
        self._target = None  # scipy CSR contrastive target of the datamodule's graph
        self._target_torch = None  # the same as a torch tensor (dense, or sparse for big graphs) for full batches

    # ---- data access ------------------------------------------------------------------------------
    def _datamodule(self):
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "contrastive_target"):
            raise RuntimeError("SCGCModule needs an SCGCDataModule passed to the Trainer (trainer.fit(module, dm))")
        return dm

    def _contrastive_target(self):
        if self._target is None:
            self._target = self._datamodule().contrastive_target(self.order, self.influence)
        return self._target

    @torch.no_grad()
    def _full_pass(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._datamodule().full_batch()["x"].to(self.device)
        return self.model(x)

    # ---- pre-training and centre initialisation -----------------------------------------------------
    def on_fit_start(self) -> None:
        self._contrastive_target()
        if not bool(self.centres_initialised):
            self.pretrain_and_init_centres()

    def pretrain_and_init_centres(self) -> None:
        """AE pre-training, the optional contrastive warm-up, then KMeans on z initialises the centres `mu`."""
        dm = self._datamodule()
        batch = dm.full_batch()
        x = batch["x"].to(self.device)
        model = self.model
        if model.decoder is not None:
            decoder = model.decoder
        else:  # SCGC*: a temporary decoder, seeded so the run stays reproducible, dropped afterwards
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                decoder = build_decoder(model.in_dim, model.hidden, model.n_z).to(self.device)
        gen = torch.Generator().manual_seed(self.seed)
        with train_mode(model), torch.enable_grad():
            self._pretrain_autoencoder(x, decoder, gen)
            km = self._contrastive_warmup(x, gen) if self.warmup_epochs > 0 else None
        self._init_centres(x, batch["y"], km)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank pre-trains the same way from the same seed; rank 0's result is made the one truth
            for t in [*model.parameters(), *self.buffers()]:
                torch.distributed.broadcast(t.data, src=0)

    def _pretrain_autoencoder(self, x: torch.Tensor, decoder, gen: torch.Generator) -> None:
        """SDCN's recipe: reconstruction MSE, Adam, shuffled node batches of `pretrain_batch_size`."""
        model = self.model
        opt = torch.optim.Adam([*model.encoder.parameters(), *decoder.parameters()], lr=self.pretrain_lr)
        for epoch in range(self.pretrain_epochs):
            perm = torch.randperm(x.shape[0], generator=gen).to(self.device)
            total = 0.0
            for chunk in perm.split(self.pretrain_batch_size):
                xb = x[chunk]
                loss = F.mse_loss(decoder(model.encode(xb)), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(chunk)
            if epoch == 0 or epoch == self.pretrain_epochs - 1:
                rank_zero_info(f"SCGC pre-training epoch {epoch + 1}/{self.pretrain_epochs}: mse {total / len(x):.5f}")

    def _contrastive_warmup(self, x: torch.Tensor, gen: torch.Generator):
        """`warmup_epochs` epochs of the training loss without KL: alpha * L_NC (+ MSE for SCGC).

        Batched like training (full graph, or node batches of the data module's batch_size); a fresh Adam at
        `pretrain_lr`. SCGC*'s temporary decoder is not used: its training loss has no reconstruction term.
        With `warmup_kmeans_epochs`, KMeans also runs after those epochs: the model goes back to the epoch whose
        best partition has the highest silhouette (label-free early stopping of the warm-up). Returns that
        KMeans fit, or None when only the final epoch is a candidate.
        """
        model = self.model
        best = None  # (silhouette, epoch, KMeans fit, model state)
        opt = torch.optim.Adam(model.parameters(), lr=self.pretrain_lr)  # mu gets no gradient here
        batch_size = getattr(self._datamodule(), "batch_size", None)
        for epoch in range(self.warmup_epochs):
            if batch_size is None:
                chunks = [torch.arange(x.shape[0])]
            else:
                chunks = torch.randperm(x.shape[0], generator=gen).split(batch_size)
            for idx in chunks:
                xb = x[idx.to(self.device)]
                z = model.encode(xb)
                nc = self._contrastive_loss(z, idx)
                loss = self.alpha * nc
                if model.decoder is not None:
                    loss = loss + F.mse_loss(model.decode(z), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if epoch == 0 or epoch == self.warmup_epochs - 1:
                rank_zero_info(f"SCGC contrastive warm-up epoch {epoch + 1}/{self.warmup_epochs}: nc {nc.item():.5f}")
            if epoch + 1 in self.warmup_kmeans_epochs:
                km, score = self._kmeans(self._kmeans_input(x)[1])
                if best is None or score > best[0]:
                    best = (score, epoch + 1, km, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if best is None:
            return None
        rank_zero_info(f"SCGC warm-up: KMeans after epoch {best[1]} has the best silhouette ({best[0]:.4f})")
        model.load_state_dict(best[3])
        return best[2]

    @torch.no_grad()
    def _kmeans_input(self, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """z of every node, and what KMeans clusters: z, or z/|z| for the model's space="sphere" (float64 numpy)."""
        z = self.model.encode(x)
        return z, (z if self.model.space == "raw" else F.normalize(z, dim=1)).cpu().double().numpy()

    def _init_centres(self, x: torch.Tensor, y: torch.Tensor, km=None) -> None:
        """Centres `mu` from KMeans on the current embedding (or from `km`, the warm-up's chosen fit)."""
        model = self.model
        z, z_km = self._kmeans_input(x)
        if km is None:
            km, _ = self._kmeans(z_km)
        centres = torch.as_tensor(km.cluster_centers_, dtype=model.mu.dtype, device=model.mu.device)
        with torch.no_grad():
            if model.space == "sphere":  # q sees z_scale * z/|z|: scaled alike, argmax q is the KMeans partition
                model.z_scale.fill_(z.norm(dim=1).mean())
                centres = model.z_scale * centres
            model.mu.copy_(centres)
        self.centres_initialised.fill_(True)
        m = clustering_metrics(y.numpy(), km.labels_)
        self.init_metrics.copy_(torch.tensor([m[k] for k in METRICS]))
        rank_zero_info("SCGC KMeans initialising the centres: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()))

    def _kmeans(self, z: np.ndarray):
        """KMeans with `kmeans_n_init` restarts, the best by inertia (scikit-learn's rule) or by silhouette.
        Returns (fit, its silhouette; None under the inertia rule).

        On Cora the lowest-inertia restart is sometimes a poor partition (ACC 0.64 where other restarts of
        the same embedding reach 0.72); the silhouette, a label-free validity index, picks better ones
        (12 seeds: ACC 0.699 -> 0.705 mean, worst seed 0.639 -> 0.668; apps/scgc/README.md).
        """
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score
        from threadpoolctl import threadpool_limits

        k = self.model.n_clusters
        # one OpenMP thread: on a busy CPU, scikit-learn's OpenMP threads next to torch's spin against each
        # other and KMeans on a few thousand points slows from ~0.1 s to tens of seconds
        with threadpool_limits(limits=1, user_api="openmp"):
            if self.kmeans_select == "inertia":
                return KMeans(n_clusters=k, n_init=self.kmeans_n_init, random_state=self.seed).fit(z), None
            seeds = np.random.default_rng(self.seed).integers(2**31 - 1, size=self.kmeans_n_init)
            fits = [KMeans(n_clusters=k, n_init=1, random_state=int(s)).fit(z) for s in seeds]
        sample = min(len(z), 5000)  # silhouette is O(N^2): large graphs score on a fixed node sample
        scores = [
            silhouette_score(z, f.labels_, sample_size=sample, random_state=self.seed) if f.labels_.max() > 0 else -1.0
            for f in fits
        ]
        best = int(np.argmax(scores))
        return fits[best], scores[best]

    # ---- training -----------------------------------------------------------------------------------
    def _refresh_p(self, idx: torch.Tensor, q: torch.Tensor) -> None:
        n = self._datamodule().num_nodes
        if idx.numel() == n:  # full batch: this forward is the full pass at the start of the epoch
            p = torch.empty_like(q)
            p[idx] = target_distribution(q.detach())
        else:
            p = target_distribution(self._full_pass()[0])
        self.p = p.detach()
        self.p_epoch = self.current_epoch

    def _contrastive_loss(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """L_NC of the nodes `idx` (embeddings z): the whole graph's target, or its in-batch block."""
        target = self._contrastive_target()
        if idx.numel() == target.shape[0] and torch.equal(idx.cpu(), torch.arange(target.shape[0])):
            if self._target_torch is None or self._target_torch.device != z.device:
                full = target_block(target, idx) if target.shape[0] <= DENSE_MAX_NODES else to_torch_sparse(target)
                self._target_torch = full.to(z.device)
            return neighbour_contrastive_loss(z, self._target_torch, self.tau)
        return minibatch_contrastive_loss(z, target, idx, self.tau)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, idx = batch["x"], batch["idx"]
        z = self.model.encode(x)
        q = self.model.soft_assign(z)
        if self.p_epoch != self.current_epoch or self.p.shape[0] == 0:
            self._refresh_p(idx, q)
        kl = kl_loss(self.p[idx], q)
        nc = self._contrastive_loss(z, idx)
        loss = self.beta * kl + self.alpha * nc
        parts = {"kl": kl, "nc": nc}
        if self.model.decoder is not None:
            parts["rec"] = F.mse_loss(self.model.decode(z), x)
            loss = loss + parts["rec"]
        bs = x.shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        for k, v in parts.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        return loss

    # ---- evaluation ---------------------------------------------------------------------------------
    def _cluster_metrics(self, batch: dict) -> dict[str, float]:
        q, _ = self.model(batch["x"])
        return clustering_metrics(batch["y"].cpu().numpy(), q.argmax(dim=1).cpu().numpy())

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        m = self._cluster_metrics(batch)
        bs = batch["x"].shape[0]
        for k, v in m.items():
            self.log(f"val/{k}", v, on_step=False, on_epoch=True, prog_bar=k == "acc", batch_size=bs, sync_dist=True)
        if not self.trainer.sanity_checking:
            self.val_best.copy_(torch.maximum(self.val_best, torch.tensor([m[k] for k in METRICS], device=self.device)))
        if torch.isfinite(self.val_best).all():
            for k, v in zip(METRICS, self.val_best.tolist(), strict=True):
                self.log(f"val/{k}_max_over_epochs", v, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        m = self._cluster_metrics(batch)
        bs = batch["x"].shape[0]
        for k, v in m.items():
            self.log(f"test/{k}", v, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        if torch.isfinite(self.init_metrics).all():
            for k, v in zip(METRICS, self.init_metrics.tolist(), strict=True):
                self.log(f"test/pretrain_kmeans_{k}", v, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)

    # ---- optimisers, checkpoints, plots --------------------------------------------------------------
    def configure_optimizers(self):
        return with_scheduler(self.optimizer_factory(self.model.parameters()), self.scheduler_factory, self.trainer)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["scgc"] = {"p": self.p.detach().cpu().clone(), "p_epoch": int(self.p_epoch)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("scgc")
        if state is not None:
            self.p = state["p"].to(self.p.device)
            self.p_epoch = int(state["p_epoch"])

    @torch.no_grad()
    def make_plots(self, plot_dir: Path, datamodule) -> list[Path]:
        """t-SNE of the embedding z of every node, coloured by predicted cluster -> plot_dir/tsne.png."""
        from apps.scgc.predict import tsne_plot

        datamodule.setup("fit")
        x = datamodule.full_batch()["x"].to(self.device)
        with eval_mode(self.model):
            q, z = self.model(x)
        path = Path(plot_dir) / "tsne.png"
        title = f"SCGC ({self.model.variant}) on {datamodule.dataset_name}: t-SNE of z, colour = cluster"
        tsne_plot(z.cpu().numpy(), q.argmax(1).cpu().numpy(), path, title, seed=self.seed)
        return [path]
