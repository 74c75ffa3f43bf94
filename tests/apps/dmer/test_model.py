"""DSAML's parts: band masks through the core's softmax attention, the dual-scale encoder, the diagonal attention
loss, the chroma key finder, shapes and gradients of both architectures, the clip-embedding slot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.dmer.model import DSAML, DualScaleTransformer, KeyProfiles, SpectrogramExtractor, band_bias
from apps.dmer.scores import diagonal_attention_loss, score_loss
from common.attention.softmax import SoftmaxAttention
from common.audio.music_score import MAJOR_PROFILE, MINOR_PROFILE, key_scores
from common.errors import ConfigError

SMALL = {"n_mels": 16, "window_frames": 11, "clip_frames": 40, "steps": 12, "dim": 32, "num_heads": 4,
         "ffn_dim": 32, "lstm_hidden": 8, "head_hidden": 8, "clip_channels": 8, "local_width": 2, "global_width": 5,
         "dropout": 0.0}  # fmt: skip


def _inputs(model, n=3):
    windows = -50 + 20 * torch.randn(n, model.steps, model.window_frames, model.n_mels)
    if model.chroma:
        windows = torch.cat([windows, torch.rand(n, model.steps, model.window_frames, 12)], dim=-1)
    return windows, -50 + 20 * torch.randn(n, model.clip_frames, model.n_mels)


def test_band_bias_is_zero_inside_the_band_and_minus_inf_outside():
    bias = band_bias(9, 2)[0, 0]
    i, j = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    assert torch.equal(bias == 0, (i - j).abs() <= 2)
    assert torch.isneginf(bias[(i - j).abs() > 2]).all()


@pytest.mark.parametrize("width", [5, 30])
def test_attention_never_looks_beyond_the_band(width):
    """The paper's scales: local |i - j| <= 5, global <= 30 steps, on 60 steps. The weights the core returns are
    exactly zero outside the band, and changing a step outside the band leaves an output step unchanged."""
    torch.manual_seed(0)
    attn = SoftmaxAttention(16, 2).eval()
    x = torch.randn(1, 60, 16)
    _, weights = attn(x, bias=band_bias(60, width), return_weights=True)
    i, j = torch.meshgrid(torch.arange(60), torch.arange(60), indexing="ij")
    assert (weights[..., (i - j).abs() > width] == 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(1, 2, 60), atol=1e-6)
    moved = x.clone()
    moved[:, 59] += 10.0  # a step beyond the band of step 0 (for both widths)
    fused = attn(x, bias=band_bias(60, width)), attn(moved, bias=band_bias(60, width))
    assert torch.allclose(fused[0][:, 0], fused[1][:, 0], atol=1e-6)
    assert not torch.allclose(fused[0][:, 59], fused[1][:, 59])


def test_dual_scale_output_is_the_sigmoid_of_the_two_shared_encoder_passes():
    torch.manual_seed(0)
    block = DualScaleTransformer(16, 2, 2, 32, 0.0, local_width=2, global_width=6).eval()
    x = torch.randn(2, 20, 16)
    out, local_w, global_w = block(x, return_weights=True)
    local, _ = block._run(x, 2, False)
    wide, _ = block._run(x, 6, False)
    assert torch.allclose(out, torch.sigmoid(local + wide), atol=1e-6)
    assert ((out > 0) & (out < 1)).all()
    i, j = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
    assert (local_w[..., (i - j).abs() > 2] == 0).all() and (global_w[..., (i - j).abs() > 6] == 0).all()
    assert (global_w[..., (i - j).abs() > 2] > 0).any()  # the global pass does see beyond the local band
    assert torch.allclose(block(x), out, atol=1e-6)  # without the weights: the same output


def test_local_width_must_be_below_the_global_one():
    with pytest.raises(ConfigError, match="local_width"):
        DualScaleTransformer(16, 2, 1, 32, 0.0, local_width=30, global_width=30)


def test_diagonal_loss_is_zero_exactly_at_its_targets_and_pulls_toward_them():
    t = 6
    local = torch.full((2, 3, t, t), 0.1 / (t - 1)) + torch.eye(t) * (0.9 - 0.1 / (t - 1))  # diagonal 0.9
    wide = torch.full((2, 3, t, t), 0.9 / (t - 1)) + torch.eye(t) * (0.1 - 0.9 / (t - 1))  # diagonal 0.1
    assert diagonal_attention_loss(local, wide).item() == pytest.approx(0.0, abs=1e-12)
    uniform = torch.full((2, 3, t, t), 1 / t, requires_grad=True)
    loss = diagonal_attention_loss(uniform, uniform)
    assert loss.item() == pytest.approx((0.9 - 1 / t) ** 2 + (0.1 - 1 / t) ** 2)
    loss.backward()
    assert (uniform.grad.diagonal(dim1=-2, dim2=-1) < 0).all()  # descending raises the diagonal (local > global)


def test_extractor_width_matches_the_official_layer_arithmetic():
    for frames, mels in ((51, 128), (51, 64), (11, 16)):
        out = SpectrogramExtractor(frames, mels)(torch.zeros(1, 2, frames, mels))
        assert out.shape == (1, 2, SpectrogramExtractor(frames, mels).out_dim)


def test_key_profiles_are_krumhansl_key_finding_and_blind_to_transposition():
    """With Krumhansl's major and minor profiles as templates the key finder's outputs are exactly the best
    major and minor correlations over the 12 tonics (key_scores); any templates give the same outputs for a
    chroma window and its transposition by any number of semitones."""
    torch.manual_seed(0)
    finder = KeyProfiles(2)
    with torch.no_grad():
        finder.templates.copy_(torch.tensor(np.stack([MAJOR_PROFILE, MINOR_PROFILE]), dtype=torch.float32))
    chroma = torch.rand(2, 3, 5, 12)
    expected = np.array([[key_scores(w.mean(0).double().numpy()).max(1) for w in piece] for piece in chroma])
    assert np.allclose(finder(chroma).detach().numpy(), expected, atol=1e-5)
    learned = KeyProfiles(8)
    for shift in (1, 5, 11):
        assert torch.allclose(learned(chroma.roll(shift, -1)), learned(chroma), atol=1e-6)
    assert not torch.allclose(learned(chroma[:, :, :, torch.randperm(12)]), learned(chroma), atol=1e-3)


@pytest.mark.parametrize(("arch", "chroma"), [("dsaml", True), ("bilstm", True), ("dsaml", False)])
def test_shapes_and_gradients_reach_every_parameter(arch, chroma):
    model = DSAML(arch=arch, chroma=chroma, **SMALL)
    windows, clip = _inputs(model)
    pred, local_w, global_w = model(windows, clip, return_attention=True)
    assert pred.shape == (3, SMALL["steps"], 2)
    assert torch.allclose(model(windows, clip), pred)  # dropout 0, eval-free: the attention-returning path agrees
    loss = score_loss(pred, torch.rand_like(pred) * 2 - 1)
    if arch == "dsaml":
        assert local_w.shape == global_w.shape == (3, SMALL["num_heads"], SMALL["steps"], SMALL["steps"])
        loss = loss + diagonal_attention_loss(local_w, global_w)
    else:
        assert local_w is None and global_w is None
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_the_clip_changes_the_paper_model_but_not_the_baseline():
    torch.manual_seed(0)
    windows, clip = _inputs(DSAML(**SMALL), n=1)
    for arch, changes in (("dsaml", True), ("bilstm", False)):
        model = DSAML(arch=arch, **SMALL).eval()
        other = model(windows, clip + 30.0)
        assert (not torch.allclose(model(windows, clip), other)) == changes, arch


def test_precomputed_clip_embeddings_replace_the_clip_encoder():
    model = DSAML(global_features="embeddings/", global_dim=24, **SMALL)
    windows, clip = model.example_inputs()
    assert clip.shape == (2, 24) and model(windows, clip).shape == (2, SMALL["steps"], 2)
    assert model.export_spec()["inputs"]["clip"]["shape"] == ["N", 24]
    assert not any("clip_encoder.net" in n for n, _ in model.named_parameters())
    with pytest.raises(ConfigError, match="global_dim"):
        DSAML(global_features="embeddings/", global_dim=None, **SMALL)
