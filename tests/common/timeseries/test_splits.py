"""Chronological splits: windows never cross a split and the scaler sees only train rows (no leakage)."""

import numpy as np
import pytest

from common.errors import ConfigError
from common.timeseries.splits import fit_scaler, make_windows, split_by_date, split_by_fraction

LOOKBACK = 5


def _series(n=100, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 3)).cumsum(axis=0)
    return features, features[:, 0].copy()


def test_fraction_split_is_contiguous_and_ordered():
    b = split_by_fraction(100, 0.15, 0.15)
    assert (b.train, b.val, b.test) == (slice(0, 70), slice(70, 85), slice(85, 100))


def test_date_split_starts_at_first_date_on_or_after():
    dates = np.arange("2020-01-01", "2020-01-11", dtype="datetime64[D]")
    b = split_by_date(dates, "2020-01-06", "2020-01-08T12:00")
    assert (b.train_end, b.val_end, b.n) == (5, 8, 10)
    with pytest.raises(ConfigError):
        split_by_date(dates, "2020-01-08", "2020-01-06")


def test_windows_read_only_rows_of_their_own_split():
    features, targets = _series()
    b = split_by_fraction(len(targets))
    rows = np.arange(len(targets), dtype=float)[:, None]  # each feature value is its own row number
    for part in (b.train, b.val, b.test):
        w = make_windows(rows, targets, part, LOOKBACK)
        assert w.x.min() >= part.start and w.x.max() < part.stop
        # window of target t holds exactly rows t-LOOKBACK .. t-1, and the target is targets[t]
        np.testing.assert_array_equal(w.x[:, :, 0], w.index[:, None] - LOOKBACK + np.arange(LOOKBACK))
        np.testing.assert_array_equal(w.y, targets[w.index])
        np.testing.assert_array_equal(w.prev, targets[w.index - 1])


def test_no_test_target_is_seen_by_train_or_val_windows():
    features, targets = _series()
    b = split_by_fraction(len(targets))
    rows = np.arange(len(targets), dtype=float)[:, None]
    test_targets = set(make_windows(rows, targets, b.test, LOOKBACK).index)
    for part in (b.train, b.val):
        w = make_windows(rows, targets, part, LOOKBACK)
        seen = set(w.x.reshape(-1).astype(int)) | set(w.index)
        assert not seen & test_targets
    # and the test windows' history is no target of another split
    val_targets = set(make_windows(rows, targets, b.val, LOOKBACK).index)
    test_inputs = set(make_windows(rows, targets, b.test, LOOKBACK).x.reshape(-1).astype(int))
    assert not test_inputs & val_targets


def test_changing_everything_after_train_leaves_scaler_and_train_windows_unchanged():
    features, targets = _series()
    b = split_by_fraction(len(targets))
    scaler = fit_scaler(features, b, "standard")
    train = make_windows(features, targets, b.train, LOOKBACK)

    changed_f, changed_t = features.copy(), targets.copy()
    changed_f[b.train_end :] = 1e6 * np.random.default_rng(1).normal(size=changed_f[b.train_end :].shape)
    changed_t[b.train_end :] = -1e6
    changed_scaler = fit_scaler(changed_f, b, "standard")
    changed_train = make_windows(changed_f, changed_t, b.train, LOOKBACK)

    np.testing.assert_array_equal(scaler.mean_, changed_scaler.mean_)
    np.testing.assert_array_equal(scaler.scale_, changed_scaler.scale_)
    np.testing.assert_array_equal(train.x, changed_train.x)
    np.testing.assert_array_equal(train.y, changed_train.y)
    # the val windows, by contrast, do see the change: the test above is not vacuous
    assert not np.array_equal(
        make_windows(features, targets, b.val, LOOKBACK).x, make_windows(changed_f, changed_t, b.val, LOOKBACK).x
    )


def test_minmax_scaler_maps_train_rows_into_unit_range():
    features, _ = _series()
    b = split_by_fraction(len(features))
    scaled = fit_scaler(features, b, "minmax").transform(features[b.train])
    assert scaled.min() == pytest.approx(0.0) and scaled.max() == pytest.approx(1.0)


def test_lookback_longer_than_a_split_is_a_config_error():
    b = split_by_fraction(100)
    with pytest.raises(ConfigError, match="lookback"):
        b.check_lookback(15)
    features, targets = _series()
    with pytest.raises(ConfigError, match="lookback"):
        make_windows(features, targets, b.test, 15)
