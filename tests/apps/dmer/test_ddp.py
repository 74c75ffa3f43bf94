"""dmer's test metrics under DDP: the per-piece scores, the pooled CCC, the mean predictor and the personalisation
of held-out annotators, from 2 processes (ddp_cpu's trainer, fork launcher; tests/common/pipeline/test_ddp_metrics.py)
are those of 1 process: each test piece and each held-out annotator counted once."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from apps.dmer.data import DMERDataModule
from apps.dmer.model import DSAML
from apps.dmer.module import DMERModule
from tests.apps.dmer.test_real import _deam
from tests.common.pipeline.test_ddp_metrics import one_and_two_processes, one_thread  # noqa: F401 (fixture)


def test_test_metrics_of_two_processes_are_those_of_one(tmp_path):
    L.seed_everything(0, verbose=False)
    root = _deam(tmp_path / "DEAM", audio=True, songs=list(range(1, 11)))
    data = DMERDataModule(source="deam", root=str(root), data_dir=str(tmp_path / "cache"), steps=8, n_mels=16,
                          hop_seconds=0.2, batch_size=2, val_fraction=0.2, test_fraction=0.3,
                          show_progress=False)  # fmt: skip
    data.prepare_data()
    data.setup("test")
    assert len(data.corpus.indices("test")) % 2 == 1  # rank 1's last batch repeats the first piece
    assert sum(len(r) >= 2 for r in data.annotator_tasks("test").values()) >= 2  # annotators to share out
    model = DSAML(dim=16, num_heads=2, num_layers=1, ffn_dim=16, lstm_hidden=8, head_hidden=8, clip_channels=8,
                  local_width=2, global_width=4, **data.model_kwargs())  # fmt: skip
    module = DMERModule(model, optimizer=partial(torch.optim.Adam, lr=1e-3), adapt_steps=2, personal_supports=2)
    one, two = one_and_two_processes(module, lambda t, m: t.test(m, datamodule=data, verbose=False)[0])
    assert one.keys() == two.keys() and {"test/valence_ccc_pooled", "test/personal_ccc_gain"} <= one.keys()
    # The same pieces through the same weights, batched differently: float32 curves equal to rounding, then
    # float32/64 reductions. Relative 1e-4 leaves room for that and none for a piece (1 of 3) or an annotator
    # counted twice or with other dropout draws.
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
