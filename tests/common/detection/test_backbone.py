"""Backbone (timm features, frozen BN, local weights), channel mapper and the sine position embeddings."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from common.detection.backbone import Backbone, ChannelMapper, freeze_batchnorm
from common.detection.position import box_sine_embedding, coordinate_sine_embedding, sine_position_embedding
from common.errors import ConfigError, DatasetError


def test_backbone_stages_and_strides():
    net = Backbone("resnet18", out_indices=(2, 3, 4))
    assert net.channels == [128, 256, 512] and net.strides == [8, 16, 32]
    feats = net(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, 128, 8, 12), (2, 256, 4, 6), (2, 512, 2, 3)]


def test_frozen_bn_matches_eval_mode_batchnorm():
    net = Backbone("resnet18").eval()
    for m in net.modules():  # non-trivial statistics, so that copying them is checked
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    frozen = freeze_batchnorm(copy.deepcopy(net)).train()  # frozen BN ignores train mode
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(frozen(x), net(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_load(tmp_path, suffix):
    src = Backbone("resnet18").eval()
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in src.body.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    dst = Backbone("resnet18", weights=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(src(x), dst(x)):
        torch.testing.assert_close(a, b)


def test_weights_errors(tmp_path):
    with pytest.raises(DatasetError, match="weights not found"):
        Backbone("resnet18", weights=str(tmp_path / "missing.pth"))
    path = tmp_path / "r18.pth"
    torch.save(Backbone("resnet18").body.state_dict(), path)
    with pytest.raises(DatasetError, match="do not fit"):
        Backbone("resnet34", weights=str(path))  # same names, more blocks: missing keys
    with pytest.raises(ConfigError, match="backbone"):
        Backbone("no_such_net")


def test_channel_mapper_adds_stride_two_levels():
    mapper = ChannelMapper([128, 256, 512], dim=64, num_levels=5)
    feats = [torch.randn(2, c, s, s) for c, s in ((128, 16), (256, 8), (512, 4))]
    out = mapper(feats)
    assert [tuple(o.shape) for o in out] == [(2, 64, s, s) for s in (16, 8, 4, 2, 1)]
    with pytest.raises(ConfigError):
        ChannelMapper([128, 256, 512], dim=64, num_levels=2)


def test_sine_position_ignores_padding():
    """Positions are normalised over the valid part: a padded map's valid pixels match the unpadded map."""
    plain = sine_position_embedding(torch.zeros(1, 4, 5, dtype=torch.bool), num_feats=16)
    mask = torch.ones(1, 7, 9, dtype=torch.bool)
    mask[:, :4, :5] = False
    padded = sine_position_embedding(mask, num_feats=16)
    assert padded.shape == (1, 32, 7, 9)
    torch.testing.assert_close(padded[..., :4, :5], plain)


def test_coordinate_sine_embedding_values():
    coords = torch.tensor([[0.0, 0.25]])
    emb = coordinate_sine_embedding(coords, num_feats=4, temperature=100.0, scale=2 * math.pi)
    assert emb.shape == (1, 8)
    torch.testing.assert_close(emb[0, :4], torch.tensor([0.0, 1.0, 0.0, 1.0]))  # sin 0, cos 0 interleaved
    # second coordinate: angle 2 pi * 0.25 / 100**(2*(i//2)/4): i=0 -> pi/2 -> sin 1; i=1 -> cos(pi/2) = 0
    torch.testing.assert_close(emb[0, 4:6], torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)
    boxes = torch.rand(2, 3, 4)
    assert box_sine_embedding(boxes, 8).shape == (2, 3, 32)
    # DINO's order (y, x, w, h): swapping x and y swaps the first two blocks
    swapped = boxes[..., [1, 0, 2, 3]]
    torch.testing.assert_close(box_sine_embedding(swapped, 8)[..., :8], box_sine_embedding(boxes, 8)[..., 8:16])
