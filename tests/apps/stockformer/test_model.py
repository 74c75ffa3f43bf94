"""Stockformer: the wavelet split, shapes and gradients, stock-permutation equivariance, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.stockformer.model import Stockformer
from apps.stockformer.wavelet import wavelet_operators, wavelet_split
from common.errors import ConfigError

N, F, T1, T2 = 6, 5, 20, 3


def _model(**kw) -> Stockformer:
    return Stockformer(num_stocks=N, num_factors=F, window=T1, horizon=T2, dim=16, graph_dim=3, **kw)


def _inputs(b: int = 2):
    g = torch.Generator().manual_seed(1)
    returns = torch.randn(b, T1, N, generator=g) * 0.02
    factors = torch.randn(b, T1, N, F, generator=g)
    dow = torch.arange(T1 + T2).remainder(5).expand(b, -1).contiguous()
    return returns, factors, dow


@pytest.mark.parametrize("length", [2, 5, 20, 21])
def test_wavelet_split_reconstructs_the_window(length):
    x = np.random.default_rng(0).normal(size=(7, length))
    low, high = wavelet_split(x)
    np.testing.assert_allclose(low + high, x, atol=1e-10)  # idwt(cA, 0) + idwt(0, cD) == x
    op_low, op_high = wavelet_operators(length)
    np.testing.assert_allclose(x @ op_low.T, low, atol=1e-5)
    np.testing.assert_allclose(x @ op_high.T, high, atol=1e-5)
    assert np.abs(low).sum() > 0 and np.abs(high).sum() > 0  # a real split, not all in one part


def test_model_split_matches_pywavelets():
    model = _model()
    returns = _inputs()[0]
    low, high = model.split(returns)
    want_low, want_high = wavelet_split(returns.numpy().transpose(0, 2, 1))  # along time, per stock
    np.testing.assert_allclose(low.numpy(), want_low.transpose(0, 2, 1), atol=1e-6)
    np.testing.assert_allclose(high.numpy(), want_high.transpose(0, 2, 1), atol=1e-6)
    torch.testing.assert_close(low + high, returns, atol=1e-6, rtol=0)


def test_shapes_and_gradients():
    model = _model(stock_embedding="both")
    out = model.forward_all(*_inputs(3))
    assert out["reg"].shape == (3, T2, N) and out["logits"].shape == (3, T2, N, 2)
    assert out["reg_low"].shape == (3, T2, N) and out["logits_low"].shape == (3, T2, N, 2)
    loss = sum(v.square().mean() for v in out.values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    pred, up = model(*_inputs(3))
    assert pred.shape == up.shape == (3, T2, N) and ((up > 0) & (up < 1)).all()
    spec = model.export_spec()
    assert list(spec["inputs"]) == ["returns", "factors", "day_of_week"] and spec["inputs"]["factors"]["shape"][3] == F


@pytest.mark.parametrize("embedding", ["learned", "correlation"])
def test_stock_permutation_equivariance(embedding):
    torch.manual_seed(0)
    model = _model(stock_embedding=embedding).eval()
    with torch.no_grad():
        model.stock_graph.copy_(torch.randn(N, 3))
        model.factor_mean.copy_(torch.randn(F) * 0.1)
    returns, factors, dow = _inputs()
    perm = torch.randperm(N)
    permuted = _model(stock_embedding=embedding).eval()
    state = dict(model.state_dict())
    key = "stock_param" if embedding == "learned" else "stock_graph"
    state[key] = state[key][perm]  # the embeddings follow their stocks
    permuted.load_state_dict(state)
    with torch.no_grad():
        pred, up = model(returns, factors, dow)
        pred_p, up_p = permuted(returns[:, :, perm], factors[:, :, perm], dow)
    torch.testing.assert_close(pred_p, pred[:, :, perm], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(up_p, up[:, :, perm], atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # without permuting the embedding the stocks are told apart: outputs change
        permuted.load_state_dict(model.state_dict())
        assert not torch.allclose(permuted(returns[:, :, perm], factors[:, :, perm], dow)[0], pred[:, :, perm])


def test_temporal_attention_is_causal():
    model = _model().eval()
    h = torch.randn(1, T1, N, 16)
    later = h.clone()
    later[:, 10:] += 1.0
    block = model.layers[0]
    with torch.no_grad():
        torch.testing.assert_close(block.temporal(h)[:, :10], block.temporal(later)[:, :10])
        torch.testing.assert_close(block.tcn(h)[:, :10], block.tcn(later)[:, :10])


def test_bad_config_names_its_key():
    with pytest.raises(ConfigError, match="stock_embedding"):
        _model(stock_embedding="struc2vec")
    with pytest.raises(ConfigError, match="horizon"):
        Stockformer(num_stocks=N, num_factors=F, window=T1, horizon=1)
    with pytest.raises(ConfigError, match="tickers"):
        _model(tickers=["A"])
