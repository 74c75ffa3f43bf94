"""Performer + BiLSTM for next-close forecasting (Labbaf Khaniki & Manthouri, arXiv 2403.03606) and the
baselines it is compared with (LSTM, BiLSTM, a vanilla Transformer encoder).

`CryptoForecaster` is the exported module: raw OHLCV + indicator windows in, the next close in USD out.
It holds the train-fitted scaler statistics as buffers (and in its config), so an export folder alone
turns a user's CSV into a forecast. Inside, `model.arch` picks the sequence network:

- `performer_bilstm` (the paper): a Transformer encoder whose multi-head softmax attention is Performer's
  FAVOR+ (`common.attention.build("favor")`) and whose position-wise feed-forward network is a
  bidirectional LSTM over the window, followed by a linear regression head on the last position.
- `transformer`: the same encoder with softmax attention and the usual MLP (common.layers.TransformerBlock).
- `lstm`, `bilstm`: stacked (bidirectional) LSTMs, head on the final hidden states.
The naive last-value forecast needs no network; the Lightning module scores it on the same windows.
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from apps.crypto_forecast.features import (
    NORMALIZATIONS,
    close_from_target,
    kind_masks,
    normalize_window,
    target_from_close,
)
from common.attention import build
from common.errors import ConfigError, check_choice, check_range
from common.layers.transformer_block import TransformerBlock

ARCHS = ("performer_bilstm", "transformer", "lstm", "bilstm")


def zero_head(width: int) -> nn.Linear:
    """A regression head that starts at 0 in the scaled target space: every architecture starts from the
    mean train move (about the naive forecast) and has to learn its way away from it."""
    head = nn.Linear(width, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class BiLSTMFeedForward(nn.Module):
    """The paper's replacement of the position-wise FFN: a BiLSTM over the sequence, projected back to `dim`.

    Unlike an MLP it mixes positions, reading the window forward and backward (all of it is past data)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.drop(self.proj(out))


class PerformerBiLSTMLayer(nn.Module):
    """Pre-norm encoder layer: x + FAVOR+(LN(x)), then x + BiLSTM-FFN(LN(x)).

    Pre-norm rather than the original post-norm: it trains stably without warm-up on short CPU runs."""

    def __init__(self, dim: int, num_heads: int, lstm_hidden: int, dropout: float, num_random_features=None):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = build("favor", dim=dim, num_heads=num_heads, num_features=num_random_features)
        self.drop = nn.Dropout(dropout)
        self.ffn = BiLSTMFeedForward(dim, lstm_hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.ffn(self.norm2(x))


class EncoderRegressor(nn.Module):
    """Input projection + learned positions + encoder layers + LayerNorm + linear head on the last position."""

    def __init__(self, layers: nn.ModuleList, num_features: int, lookback: int, dim: int, dropout: float):
        super().__init__()
        self.embed = nn.Linear(num_features, dim)
        self.pos = nn.Parameter(torch.zeros(1, lookback, dim))
        trunc_normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.layers = layers
        self.norm = nn.LayerNorm(dim)
        self.head = zero_head(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.embed(x) + self.pos)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h[:, -1])).squeeze(-1)


class LSTMRegressor(nn.Module):
    """Stacked (Bi)LSTM; the head reads the last layer's final hidden state(s) (both directions if bidirectional,
    the backward one having read the whole window back to its first row)."""

    def __init__(self, num_features: int, hidden: int, num_layers: int, dropout: float, bidirectional: bool):
        super().__init__()
        self.lstm = nn.LSTM(
            num_features,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.directions = 2 if bidirectional else 1
        self.head = zero_head(self.directions * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(x)
        last = h_n[-self.directions :].transpose(0, 1).flatten(1)  # [N, directions * hidden]
        return self.head(last).squeeze(-1)


def build_network(arch, num_features, lookback, dim, num_heads, num_layers, lstm_hidden, mlp_ratio, dropout, nrf):
    check_choice("arch", arch, ARCHS)
    if arch == "performer_bilstm":
        layers = nn.ModuleList(
            PerformerBiLSTMLayer(dim, num_heads, lstm_hidden, dropout, nrf) for _ in range(num_layers)
        )
        return EncoderRegressor(layers, num_features, lookback, dim, dropout)
    if arch == "transformer":
        layers = nn.ModuleList(
            TransformerBlock(dim, num_heads, attention="softmax", mlp_ratio=mlp_ratio) for _ in range(num_layers)
        )
        return EncoderRegressor(layers, num_features, lookback, dim, dropout)
    return LSTMRegressor(num_features, lstm_hidden, num_layers, dropout, bidirectional=arch == "bilstm")


class CryptoForecaster(nn.Module):
    """Next-close forecaster with its input normalisation and train-fitted scaler built in.

    Args:
        arch: performer_bilstm (the paper) | transformer | lstm | bilstm.
        num_features, lookback, feature_names, close_index: the data's window layout (filled from the data).
        normalization: relative | raw (see apps.crypto_forecast.features).
        feature_shift, feature_scale, target_shift, target_scale: the train-fitted scaler,
            z = (value - shift) / scale (filled from the data).
        dim, num_heads, num_layers: encoder width, heads and depth (the LSTM baselines use num_layers too).
        lstm_hidden: hidden size per direction of the BiLSTM feed-forward and of the LSTM baselines.
        mlp_ratio: the vanilla Transformer's MLP width factor.
        dropout: dropout in the encoders and between LSTM layers.
        num_random_features: FAVOR+ random features per head (null: round(d ln d)).

    Shapes:
        window: [N, lookback, num_features] raw values (USD prices, volume, indicators). Output [N] USD.
    """

    TRAINING_METHOD = "forward_scaled"  # what compile=true compiles besides forward (the module trains through it)

    def __init__(
        self,
        arch: str = "performer_bilstm",
        num_features: int = 18,
        lookback: int = 20,
        feature_names: list | None = None,
        close_index: int = 3,
        normalization: str = "relative",
        feature_shift: list | None = None,
        feature_scale: list | None = None,
        target_shift: float = 0.0,
        target_scale: float = 1.0,
        dim: int = 32,
        num_heads: int = 4,
        num_layers: int = 2,
        lstm_hidden: int = 32,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        num_random_features: int | None = None,
    ):
        super().__init__()
        check_choice("normalization", normalization, NORMALIZATIONS)
        for key, value in (("num_features", num_features), ("lookback", lookback), ("dim", dim)):
            check_range(key, value, 1)
        check_range("num_layers", num_layers, 1)
        check_range("lstm_hidden", lstm_hidden, 1)
        check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        feature_names = list(feature_names or [f"f{i}" for i in range(num_features)])
        if len(feature_names) != num_features:
            raise ConfigError("feature_names", feature_names, f"{num_features} names (num_features)")
        check_range("close_index", close_index, 0, num_features - 1)
        self.arch, self.lookback, self.num_features = arch, lookback, num_features
        self.feature_names, self.close_index, self.normalization = feature_names, close_index, normalization
        shift = torch.tensor(feature_shift if feature_shift is not None else [0.0] * num_features, dtype=torch.float32)
        scale = torch.tensor(feature_scale if feature_scale is not None else [1.0] * num_features, dtype=torch.float32)
        if shift.shape != (num_features,) or scale.shape != (num_features,) or not bool((scale > 0).all()):
            raise ConfigError("feature_scale", list(scale.tolist()), f"{num_features} positive numbers")
        check_range("target_scale", target_scale, 0.0, low_inclusive=False)
        # The scaler travels with the weights (buffers are saved) and with model.yaml (the arguments).
        self.register_buffer("feature_shift", shift)
        self.register_buffer("feature_scale", scale)
        self.register_buffer("target_shift", torch.tensor(float(target_shift)))
        self.register_buffer("target_scale", torch.tensor(float(target_scale)))
        for kind, mask in kind_masks(feature_names).items():
            self.register_buffer(f"{kind}_mask", mask, persistent=False)
        if arch in ("performer_bilstm", "transformer") and dim % num_heads:
            raise ConfigError("num_heads", num_heads, f"a divisor of dim={dim}")
        self.network = build_network(
            arch,
            num_features,
            lookback,
            dim,
            num_heads,
            num_layers,
            lstm_hidden,
            mlp_ratio,
            dropout,
            num_random_features,
        )

    def _masks(self) -> dict[str, torch.Tensor]:
        return {"price": self.price_mask, "price_diff": self.price_diff_mask, "volume": self.volume_mask}

    def last_close(self, window: torch.Tensor) -> torch.Tensor:
        """The last observed close of each window [N]: the naive forecast."""
        return window[:, -1, self.close_index]

    def scaled_inputs(self, window: torch.Tensor) -> torch.Tensor:
        normalized = normalize_window(window, self._masks(), self.close_index, self.normalization)
        return (normalized - self.feature_shift) / self.feature_scale

    def forward_scaled(self, window: torch.Tensor) -> torch.Tensor:
        """The network's output in the scaled target space [N] (the training loss is taken here)."""
        return self.network(self.scaled_inputs(window))

    def scale_target(self, next_close: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        target = target_from_close(next_close, self.last_close(window), self.normalization)
        return (target - self.target_shift) / self.target_scale

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """window [N, lookback, F] raw -> the next close [N] in USD (inverse-scaled)."""
        target = self.forward_scaled(window) * self.target_scale + self.target_shift
        return close_from_target(target, self.last_close(window), self.normalization)

    def example_inputs(self) -> tuple[torch.Tensor]:
        close = 100.0 * torch.exp(torch.randn(2, self.lookback, 1).cumsum(1) * 0.01)
        window = close * (1 + 0.01 * torch.rand(2, self.lookback, self.num_features))  # positive, price-like
        return (window,)

    def export_spec(self) -> dict:
        return {
            "inputs": {"window": {"shape": ["N", self.lookback, self.num_features], "dtype": "float32"}},
            "outputs": {"next_close": {"shape": ["N"], "dtype": "float32"}},
            "feature_names": self.feature_names,
            "lookback": self.lookback,
            "arch": self.arch,
        }
