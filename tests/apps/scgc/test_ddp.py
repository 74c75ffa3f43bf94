"""SCGC under DDP: full-graph training and clustering metrics of 2 processes (ddp_cpu's trainer, fork launcher;
see tests/common/pipeline/test_ddp_metrics.py) are those of 1 process.

Full batch, every rank holds the whole graph: the ranks' gradients are equal and their average is that gradient
exactly ((g + g) / 2 = g in floating point), so the weights after training match bit for bit. Validation and test
cluster every node: the eval split is one item (the whole graph) that Lightning's DistributedSampler repeats to
the second rank, so each rank scores the whole graph and the synced mean of two equal numbers is that number.
"""

from __future__ import annotations

import functools

import lightning as L
import torch

from apps.scgc.model import SCGC
from apps.scgc.module import SCGCModule
from tests.apps.scgc.test_scgc_module import TINY, block_graph
from tests.common.pipeline.test_ddp_metrics import one_and_two_processes, one_thread  # noqa: F401 (fixture)


def test_full_graph_training_and_metrics_of_two_processes_are_those_of_one(tmp_path):
    dm = block_graph(tmp_path)
    L.seed_everything(0, verbose=False)
    module = SCGCModule(
        SCGC(6, 4, **TINY), functools.partial(torch.optim.Adam, lr=1e-3), pretrain_epochs=2, kmeans_n_init=2, seed=0
    )

    def fit_and_test(trainer, m):
        trainer.fit(m, datamodule=dm)
        return trainer.test(m, datamodule=dm, verbose=False)[0], m.state_dict()

    (one, weights_one), (two, weights_two) = one_and_two_processes(module, fit_and_test, max_epochs=3)
    assert set(one) >= {"test/acc", "test/nmi", "test/ari", "test/f1"}
    assert one == two
    for key, value in weights_one.items():
        assert torch.equal(value, weights_two[key]), key
