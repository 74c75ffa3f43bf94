"""`deploy_form`: the export's generic hook for structurally re-parameterised models."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from common.pipeline.export import deploy_form


class _Foldable(torch.nn.Module):
    """y = bn(conv(x)) while training, one conv after `reparameterize()`."""

    def __init__(self, deploy: bool = False):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 1, bias=deploy)
        self.bn = None if deploy else torch.nn.BatchNorm2d(2)

    def forward(self, x):
        return self.conv(x) if self.bn is None else self.bn(self.conv(x))

    @torch.no_grad()
    def reparameterize(self):
        if self.bn is None:
            return
        s = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        fused = torch.nn.Conv2d(2, 2, 1)
        fused.weight.copy_(self.conv.weight * s[:, None, None, None])
        fused.bias.copy_(self.bn.bias - self.bn.running_mean * s)
        self.conv, self.bn = fused, None


def test_a_foldable_model_is_folded_in_eval_mode_and_its_config_marked():
    model = _Foldable().train()
    model.bn.running_mean.fill_(0.3)
    x = torch.randn(1, 2, 3, 3)
    want = model.eval()(x).detach()
    model.train()
    cfg_in = OmegaConf.create({"_target_": "x.Y", "width": 2})
    OmegaConf.set_struct(cfg_in, True)  # as run configs are loaded: a new key must still be writable
    folded, cfg = deploy_form(model, cfg_in)
    assert folded is model and not model.training and model.bn is None
    assert cfg.deploy is True and cfg.width == 2 and "deploy" not in cfg_in
    assert torch.allclose(folded(x), want, atol=1e-6)


def test_other_models_pass_through_unchanged():
    model, cfg_in = torch.nn.Linear(2, 2), OmegaConf.create({"_target_": "x.Y"})
    out, cfg = deploy_form(model, cfg_in)
    assert out is model and cfg is cfg_in and "deploy" not in cfg
