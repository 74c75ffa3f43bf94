"""Factors are causal: appending future rows never changes a past value."""

from __future__ import annotations

import numpy as np
import pytest

from apps.stockformer.factors import MOMENTUM, WARMUP, compute_factors, factor_names
from tests.apps.stockformer.conftest import synthetic_panel


@pytest.mark.parametrize("use_volume", [False, True])
def test_appending_future_rows_leaves_past_factors_unchanged(use_volume):
    names = factor_names(use_volume)
    full = synthetic_panel(400)
    cut = 300
    past = compute_factors(full.slice(0, cut), names)
    later = compute_factors(full, names)[:cut]
    np.testing.assert_array_equal(np.isnan(past), np.isnan(later))
    np.testing.assert_allclose(np.nan_to_num(past), np.nan_to_num(later), rtol=0, atol=1e-6)


def test_factors_full_after_warmup_and_momentum_by_hand():
    panel = synthetic_panel(400)
    names = factor_names(True)
    f = compute_factors(panel, names)
    assert f.shape == (400, 4, len(names)) and np.isfinite(f[WARMUP + 1 :]).all()
    t = 350
    want = np.log(panel.close[t - 21] / panel.close[t - 252])
    np.testing.assert_allclose(f[t, :, names.index(MOMENTUM)], want, rtol=1e-5)
    with pytest.raises(ValueError, match="need open/high/low/volume"):
        compute_factors(panel.__class__(panel.dates, panel.tickers, {"close": panel.close}), names)
