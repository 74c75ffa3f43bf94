"""`deploy_form`: the export's generic hook for structurally re-parameterised models; `export_onnx`'s check of
the graph against PyTorch on every input size a model gives, and the spec's dynamic dims."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from common.pipeline.export import ONNX_ATOL, _dynamic_shapes, deploy_form, export_onnx


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


class _Pool(torch.nn.Module):
    """A 1x1 conv then the mean over the image: any height and width."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 1)

    def forward(self, x):
        return self.conv(x).mean((-2, -1))


def _spec(shape) -> dict:
    return {"inputs": {"x": {"shape": shape, "min": {"H": 3}}}, "outputs": {"y": {"shape": ["B", 3]}}}


def test_onnx_export_is_checked_on_every_input_size_given(tmp_path):
    model, x = _Pool().eval(), torch.randn(2, 2, 4, 4)
    info = export_onnx(model, (x,), _spec(["B", 2, "H", "W"]), tmp_path / "m.onnx", 18, [(torch.randn(1, 2, 3, 7),)])
    assert info["format"] == "onnx" and info["checked_on"] == [[[2, 2, 4, 4]], [[1, 2, 3, 7]]]
    assert info["max_abs_diff"] < ONNX_ATOL


def test_a_graph_fixed_at_the_traced_size_fails_the_check_of_another(tmp_path):
    """The reported bug's shape: spatial dims fixed at trace time, another size fed; onnxruntime refuses it."""
    model, x = _Pool().eval(), torch.randn(2, 2, 4, 4)
    with pytest.raises(Exception, match="invalid dimensions"):
        export_onnx(model, (x,), _spec(["B", 2, 4, 4]), tmp_path / "m.onnx", 18, [(torch.randn(2, 2, 4, 6),)])


def test_dynamic_dims_take_their_minimum_from_the_spec():
    dims = _dynamic_shapes(_spec(["B", 2, "H", "W"]))["x"]
    assert [dims[i].min for i in (0, 2, 3)] == [2, 3, 2]  # B and W by default, H as the spec says
