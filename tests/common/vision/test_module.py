"""ImageClassificationModule: accuracy metrics against hand-computed values, top-5 clamping, mixup loss,
the optimiser's weight-decay groups and the step-wise warm-up/cosine schedule."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.errors import ConfigError
from common.vision.models import ImageClassifier
from common.vision.module import ImageClassificationModule
from common.vision.schedule import warmup_cosine


class FixedLogits(nn.Module):
    """Returns the logits stored in the first pixel row: image [B, 1, 1, K] -> [B, K]."""

    def __init__(self, k):
        super().__init__()
        self.num_classes = k
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x[:, 0, 0] * self.w


def _module(k, **kw):
    return ImageClassificationModule(FixedLogits(k), functools.partial(torch.optim.SGD, lr=0.1), **kw)


def test_accuracy_and_top5_match_hand_computed():
    module = _module(7)
    logits = torch.tensor(
        [
            [9, 8, 7, 6, 5, 4, 0],  # label 0: top-1 and top-5 hit
            [9, 8, 7, 6, 5, 4, 0],  # label 4: top-5 hit only
            [9, 8, 7, 6, 5, 4, 0],  # label 6: neither
            [0, 1, 2, 3, 4, 5, 9],  # label 6: top-1 hit
        ],
        dtype=torch.float32,
    )
    labels = torch.tensor([0, 4, 6, 6])
    module.val_acc.update(logits, labels)
    module.val_acc_top5.update(logits, labels)
    assert module.val_acc.compute().item() == pytest.approx(0.5)
    assert module.val_acc_top5.compute().item() == pytest.approx(0.75)


def test_top5_is_clamped_below_five_classes():
    module = _module(3)
    assert module.val_acc_top5.top_k == 3
    module.test_acc_top5.update(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0]))
    assert module.test_acc_top5.compute().item() == 1.0


def test_fit_logs_the_contract_metrics_and_mixup_loss_is_finite():
    torch.manual_seed(0)
    x = torch.randn(32, 1, 1, 4)
    y = torch.randint(0, 4, (32,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    module = _module(4, mixup=0.8, cutmix=0.0, label_smoothing=0.1)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(module, loader, loader)
    logged = dict(trainer.callback_metrics)
    trainer.test(module, loader, verbose=False)
    logged |= trainer.callback_metrics
    for name in ("train/loss", "val/loss", "val/acc", "val/acc_top5", "test/acc", "test/acc_top5"):
        assert name in logged and torch.isfinite(logged[name]), name
    images, soft = module.mixup(x[:8].clone(), y[:8])
    assert soft.shape == (8, 4) and torch.allclose(soft.sum(-1), torch.ones(8))


def test_weight_decay_groups_and_stepwise_schedule():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 3))
    model = ImageClassifier(net, num_classes=3, in_chans=1, img_size=2)
    module = ImageClassificationModule(
        model,
        functools.partial(torch.optim.AdamW, lr=1.0, weight_decay=0.05),
        functools.partial(warmup_cosine, warmup_steps=2, min_lr_ratio=0.0),
    )

    class FakeTrainer:
        estimated_stepping_batches = 10

    module._trainer = FakeTrainer()
    out = module.configure_optimizers()
    decays = sorted(g["weight_decay"] for g in out["optimizer"].param_groups)
    assert decays == [0.0, 0.05]  # biases and norms without decay
    assert out["lr_scheduler"]["interval"] == "step"
    sched = out["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(10):
        lrs.append(out["optimizer"].param_groups[0]["lr"])
        out["optimizer"].step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)  # linear warm-up over 2 steps
    assert lrs[-1] < 0.05 and all(a >= b for a, b in zip(lrs[1:], lrs[2:]))  # cosine decay


def test_bad_values_raise_config_errors():
    with pytest.raises(ConfigError, match="label_smoothing"):
        _module(3, label_smoothing=1.0)
    with pytest.raises(ConfigError, match="mixup"):
        _module(3, mixup=-1)
