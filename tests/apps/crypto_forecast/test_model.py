"""The forecaster: shapes and gradients of every architecture, the paper's components, the built-in scaler."""

import pytest
import torch

from apps.crypto_forecast.model import ARCHS, BiLSTMFeedForward, CryptoForecaster, PerformerBiLSTMLayer
from common.attention.favor import FavorAttention
from common.errors import ConfigError

NAMES = ["open", "high", "low", "close", "volume", "rsi_14", "sma_7", "bb_high", "cci_20", "macd", "macd_signal"]


def _model(arch="performer_bilstm", **kw):
    kw = {
        "arch": arch,
        "num_features": len(NAMES),
        "feature_names": NAMES,
        "close_index": 3,
        "lookback": 12,
        "feature_shift": [0.1] * len(NAMES),
        "feature_scale": [2.0] * len(NAMES),
        "target_shift": 0.001,
        "target_scale": 0.03,
        "dropout": 0.0,
    } | kw
    return CryptoForecaster(**kw)


def _windows(n=5, lookback=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    close = 100 * torch.exp(0.02 * torch.randn(n, lookback, 1, generator=g).cumsum(1))
    x = close * (1 + 0.01 * torch.rand(n, lookback, len(NAMES), generator=g))
    x[..., 4] = 1000 * torch.rand(n, lookback, generator=g)  # volume
    x[..., 5] = 100 * torch.rand(n, lookback, generator=g)  # rsi
    x[..., 8] = 200 * torch.randn(n, lookback, generator=g)  # cci
    x[..., 9:] = close * 0.01 * torch.randn(n, lookback, 2, generator=g)  # macd lines
    return x


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_maps_windows_to_one_price_and_gets_gradients(arch):
    model = _model(arch)
    torch.nn.init.normal_(model.network.head.weight, std=0.1)  # the head starts at zero; wake it up
    x = _windows()
    out = model(x)
    assert out.shape == (5,) and torch.isfinite(out).all()
    loss = (model.forward_scaled(x) - model.scale_target(x[:, -1, 3] * 1.01, x)).square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) > 0 for g in grads) >= 0.9 * len(grads)


def test_paper_model_is_favor_attention_with_a_bilstm_feed_forward():
    model = _model("performer_bilstm", num_layers=3)
    layers = [m for m in model.modules() if isinstance(m, PerformerBiLSTMLayer)]
    assert len(layers) == 3
    for layer in layers:
        assert isinstance(layer.attn, FavorAttention)
        assert isinstance(layer.ffn, BiLSTMFeedForward) and layer.ffn.lstm.bidirectional
    assert not any(isinstance(m, FavorAttention) for m in _model("transformer").modules())


def test_bilstm_feed_forward_mixes_positions_both_ways():
    ffn = BiLSTMFeedForward(dim=8, hidden=6).eval()
    x = torch.randn(1, 10, 8)
    changed = x.clone()
    changed[:, 9] += 1.0  # a change at the last position reaches the first (backward direction)
    assert not torch.allclose(ffn(x)[:, 0], ffn(changed)[:, 0])


def test_zero_head_starts_every_arch_at_the_mean_train_move():
    x = _windows()
    for arch in ARCHS:
        out = _model(arch).eval()(x)
        torch.testing.assert_close(out, x[:, -1, 3] * torch.exp(torch.tensor(0.001)), rtol=1e-5, atol=1e-4)


def test_scaled_target_round_trips_to_the_price():
    model = _model()
    x = _windows()
    next_close = x[:, -1, 3] * torch.tensor([0.9, 1.0, 1.05, 1.2, 0.99])
    z = model.scale_target(next_close, x)
    back = (z * model.target_scale + model.target_shift).exp() * model.last_close(x)
    torch.testing.assert_close(back, next_close)


@pytest.mark.parametrize("arch", ARCHS)
def test_relative_normalisation_makes_forecasts_scale_equivariant(arch):
    model = _model(arch).eval()
    torch.nn.init.normal_(model.network.head.weight, std=0.1)
    x = _windows()
    scaled = x.clone()
    price_like = [i for i, n in enumerate(NAMES) if n not in ("volume", "rsi_14", "cci_20")]
    scaled[..., price_like] *= 1000.0  # the same market quoted in another unit
    torch.testing.assert_close(model(scaled), 1000.0 * model(x), rtol=1e-4, atol=1e-3)


def test_scaler_statistics_are_buffers_saved_with_the_weights():
    state = _model().state_dict()
    for name in ("feature_shift", "feature_scale", "target_shift", "target_scale"):
        assert name in state
    assert float(state["target_scale"]) == pytest.approx(0.03)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="arch"):
        _model("gru")
    with pytest.raises(ConfigError, match="feature_scale"):
        _model(feature_scale=[0.0] * len(NAMES))
    with pytest.raises(ConfigError, match="feature_names"):
        _model(feature_names=NAMES[:-1])
    with pytest.raises(ConfigError, match="num_heads"):
        _model(num_heads=5)
