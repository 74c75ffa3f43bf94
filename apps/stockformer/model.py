"""Stockformer (Ma, Xue, Lu, Chen; arXiv 2401.06139): wavelet split, dual-frequency encoder, multi-task heads.

Per sample: the last T1 daily returns of N stocks `returns [B, T1, N]`, their factors `factors [B, T1, N, F]`
(raw; standardised inside with train statistics kept as buffers) and the weekday of each of the T1 input and
T2 target days `day_of_week [B, T1 + T2]` (0 = Monday). Out: the next T2 daily returns `[B, T2, N]` and the
probability that each is positive `[B, T2, N]`.

1. Wavelet split (sym2, one level) of each stock's return window into low- and high-frequency parts.
2. Start embeddings: MLP over [part, up/down indicator, factors] for each branch; plus a temporal
   encoding (weekday one-hot + position one-hot -> MLP), as the paper's TE.
3. Dual encoder x depth: low branch = causal temporal self-attention (the core's attention, post-LN, FF);
   high branch = dilated causal convolution (kernel 2, dilation 2^layer, ReLU, dropout). Each branch then
   attends across stocks, with a stock embedding added: a correlation-graph embedding (spectral embedding of
   the train-period return correlations, a buffer) and/or a learned one.
4. pre_l / pre_h: a linear map along time T1 -> T2 (the paper's 1x1 Conv2d with time as channels).
5. Adaptive fusion: per stock, causal cross-attention over the T2 steps, queries from the low stream, keys
   and values ReLU-projected from the high stream (+ TE of the target days), residual, LN, FF.
6. Multi-task heads shared by the fused and the low stream: regression (returns, in units of the train
   return std) and up/down classification.

Deviations from the official code (see README): the cross-stock attention is dense softmax attention (the
official "sparse" copy step that gathers the value at the argmax is not reproduced); the stock graph
embedding is a spectral embedding of the correlation matrix instead of Struc2vec; d, depth and the factor
set are smaller for CPU minutes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apps.stockformer.wavelet import wavelet_operators
from common.attention import build
from common.errors import ConfigError, check_choice, check_range

STOCK_EMBEDDINGS = ("correlation", "learned", "both")
WEEKDAYS = 5


def mlp(din: int, dim: int, dout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, dim), nn.ReLU(), nn.Linear(dim, dout))


def _tokens(h: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """[B, T, N, d] -> per-stock sequences [B*N, T, d]."""
    b, t, n, d = h.shape
    return h.permute(0, 2, 1, 3).reshape(b * n, t, d), (b, t, n, d)


def _untokens(z: torch.Tensor, shape: tuple) -> torch.Tensor:
    b, t, n, d = shape
    return z.reshape(b, n, t, d).permute(0, 2, 1, 3)


class TemporalAttention(nn.Module):
    """Low-frequency branch: causal self-attention over time for each stock, residual + LN, FF + LN."""

    def __init__(self, dim: int, heads: int, dropout: float, attention: str):
        super().__init__()
        self.attn = build(attention, dim=dim, num_heads=heads, causal=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = mlp(dim, dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z, shape = _tokens(h)
        z = self.norm1(z + self.drop(self.attn(z)))
        z = self.norm2(z + self.drop(self.ff(z)))
        return _untokens(z, shape)


class DilatedCausalConv(nn.Module):
    """High-frequency branch: a dilated causal convolution over time (kernel 2, left padding = no peeking)."""

    def __init__(self, dim: int, dilation: int, dropout: float, kernel: int = 2):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(dim, dim, kernel, dilation=dilation)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z, shape = _tokens(h)
        y = self.conv(F.pad(z.transpose(1, 2), (self.pad, 0))).transpose(1, 2)
        return _untokens(self.norm(z + self.drop(F.relu(y))), shape)


class StockAttention(nn.Module):
    """Self-attention across the N stocks at each time step, the stock embedding added to keys and queries."""

    def __init__(self, dim: int, heads: int, dropout: float, attention: str):
        super().__init__()
        self.attn = build(attention, dim=dim, num_heads=heads)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = mlp(dim, dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, stock_emb: torch.Tensor) -> torch.Tensor:
        b, t, n, d = h.shape
        z = (h + stock_emb).reshape(b * t, n, d)
        z = self.norm1(z + self.drop(self.attn(z)))
        z = self.norm2(z + self.drop(self.ff(z)))
        return z.reshape(b, t, n, d)


class DualEncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, attention: str, dilation: int):
        super().__init__()
        self.temporal = TemporalAttention(dim, heads, dropout, attention)
        self.tcn = DilatedCausalConv(dim, dilation, dropout)
        self.stocks_low = StockAttention(dim, heads, dropout, attention)
        self.stocks_high = StockAttention(dim, heads, dropout, attention)

    def forward(self, low, high, stock_emb):
        low = self.stocks_low(self.temporal(low), stock_emb)
        high = self.stocks_high(self.tcn(high), stock_emb)
        return low, high


class AdaptiveFusion(nn.Module):
    """Causal cross-attention over the T2 target steps: low-frequency queries, high-frequency keys/values."""

    def __init__(self, dim: int, heads: int, dropout: float, attention: str):
        super().__init__()
        self.kv_proj = nn.Linear(dim, dim)
        self.attn = build(attention, dim=dim, num_heads=heads)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = mlp(dim, dim, dim)

    def forward(self, low: torch.Tensor, high: torch.Tensor, te: torch.Tensor) -> torch.Tensor:
        q, shape = _tokens(low + te)
        kv, _ = _tokens(F.relu(self.kv_proj(high + te)))
        t = q.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
        bias = torch.zeros(t, t, dtype=q.dtype, device=q.device).masked_fill(~causal, float("-inf"))
        z = self.norm1(q + self.attn(q, context=kv, bias=bias))
        return _untokens(self.norm2(z + self.ff(z)), shape)


class Stockformer(nn.Module):
    TRAINING_METHOD = "forward_all"  # what compile=true compiles besides forward (the module trains through it)

    def __init__(
        self,
        num_stocks: int,
        num_factors: int,
        window: int = 20,
        horizon: int = 2,
        dim: int = 128,
        depth: int = 2,
        heads: int = 1,
        dropout: float = 0.1,
        wavelet: str = "sym2",
        stock_embedding: str = "correlation",
        graph_dim: int = 8,
        attention: str = "softmax",
        tickers: list[str] | None = None,
        factor_names: list[str] | None = None,
    ):
        super().__init__()
        check_range("num_stocks", num_stocks, 2)
        check_range("num_factors", num_factors, 0)
        check_range("window", window, 2)
        check_range("horizon", horizon, 2)
        check_range("dim", dim, 1)
        check_range("depth", depth, 1)
        check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        check_choice("stock_embedding", stock_embedding, STOCK_EMBEDDINGS)
        check_range("graph_dim", graph_dim, 1, num_stocks)
        if tickers is not None and len(tickers) != num_stocks:
            raise ConfigError("tickers", f"{len(tickers)} names", f"{num_stocks} names (num_stocks)")
        if factor_names is not None and len(factor_names) != num_factors:
            raise ConfigError("factor_names", f"{len(factor_names)} names", f"{num_factors} names (num_factors)")
        self.num_stocks, self.num_factors, self.window, self.horizon = num_stocks, num_factors, window, horizon
        self.stock_embedding = stock_embedding
        self.tickers = list(tickers) if tickers is not None else [f"stock_{i}" for i in range(num_stocks)]
        self.factor_names = list(factor_names) if factor_names is not None else []

        try:
            low_in, high_in = wavelet_operators(window, wavelet)
            low_out, _ = wavelet_operators(horizon, wavelet)
        except ValueError as e:
            raise ConfigError("wavelet", wavelet, "a discrete wavelet name known to PyWavelets (e.g. sym2)") from e
        self.register_buffer("wavelet_low", torch.from_numpy(low_in))
        self.register_buffer("wavelet_high", torch.from_numpy(high_in))
        self.register_buffer("wavelet_low_target", torch.from_numpy(low_out))
        # train statistics, filled by the Lightning module from the data before training; they travel with
        # the weights so that predict needs nothing else
        self.register_buffer("factor_mean", torch.zeros(num_factors))
        self.register_buffer("factor_std", torch.ones(num_factors))
        self.register_buffer("return_scale", torch.ones(()))
        self.register_buffer("stock_graph", torch.zeros(num_stocks, graph_dim))

        feat = 2 + num_factors  # [wavelet part, up/down indicator, factors]
        self.start_low, self.start_high = mlp(feat, dim, dim), mlp(feat, dim, dim)
        self.temporal_encoding = mlp(WEEKDAYS + window + horizon, dim, dim)
        self.graph_proj = nn.Linear(graph_dim, dim) if stock_embedding != "learned" else None
        self.stock_param = (
            nn.Parameter(torch.randn(num_stocks, dim) * 0.02) if stock_embedding != "correlation" else None
        )
        self.layers = nn.ModuleList(DualEncoderLayer(dim, heads, dropout, attention, 2**i) for i in range(depth))
        self.pre_low, self.pre_high = nn.Linear(window, horizon), nn.Linear(window, horizon)
        self.fusion = AdaptiveFusion(dim, heads, dropout, attention)
        self.regression = mlp(dim, dim, 1)
        self.classification = mlp(dim, dim, 2)

    # ---- pieces ----------------------------------------------------------------------------------
    def split(self, returns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Low and high parts of each stock's window along time: [B, T1, N] -> 2 x [B, T1, N]."""
        return (
            torch.einsum("st,btn->bsn", self.wavelet_low, returns),
            torch.einsum("st,btn->bsn", self.wavelet_high, returns),
        )

    def low_target(self, target: torch.Tensor) -> torch.Tensor:
        """The low-frequency part of the target returns [B, T2, N] (the auxiliary target)."""
        return torch.einsum("st,btn->bsn", self.wavelet_low_target, target)

    def stock_embeddings(self) -> torch.Tensor:
        emb = 0.0
        if self.graph_proj is not None:
            emb = emb + self.graph_proj(self.stock_graph)
        if self.stock_param is not None:
            emb = emb + self.stock_param
        return emb

    def _temporal_encoding(self, day_of_week: torch.Tensor) -> torch.Tensor:
        b, t = day_of_week.shape
        dow = F.one_hot(day_of_week.long().clamp(0, WEEKDAYS - 1), WEEKDAYS).to(self.wavelet_low.dtype)
        pos = torch.eye(t, dtype=dow.dtype, device=dow.device).expand(b, t, t)
        return self.temporal_encoding(torch.cat([dow, pos], dim=-1))[:, :, None, :]  # [B, T1+T2, 1, d]

    # ---- forward ---------------------------------------------------------------------------------
    def forward_all(self, returns: torch.Tensor, factors: torch.Tensor, day_of_week: torch.Tensor) -> dict:
        """Every output the losses need: fused and low-stream regression [B,T2,N] and logits [B,T2,N,2]."""
        x = returns / self.return_scale
        factors = torch.nan_to_num((factors - self.factor_mean) / self.factor_std).clamp(-5.0, 5.0)
        low, high = self.split(x)
        up = (returns > 0).to(x.dtype)
        te = self._temporal_encoding(day_of_week)
        te_in, te_out = te[:, : self.window], te[:, self.window :]
        low = self.start_low(torch.cat([low[..., None], up[..., None], factors], dim=-1)) + te_in
        high = self.start_high(torch.cat([high[..., None], up[..., None], factors], dim=-1)) + te_in
        stock_emb = self.stock_embeddings()
        for layer in self.layers:
            low, high = layer(low, high, stock_emb)
        low = self.pre_low(low.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # time T1 -> T2
        high = self.pre_high(high.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        fused = self.fusion(low, high, te_out)
        return {
            "reg": self.regression(fused).squeeze(-1),
            "logits": self.classification(fused),
            "reg_low": self.regression(low).squeeze(-1),
            "logits_low": self.classification(low),
        }

    def forward(self, returns: torch.Tensor, factors: torch.Tensor, day_of_week: torch.Tensor):
        """(predicted daily returns [B, T2, N], probability of an up day [B, T2, N]): the exported graph."""
        out = self.forward_all(returns, factors, day_of_week)
        return out["reg"] * self.return_scale, out["logits"].softmax(dim=-1)[..., 1]

    # ---- export contract -------------------------------------------------------------------------
    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        b = 2
        returns = torch.randn(b, self.window, self.num_stocks, generator=g) * 0.02
        factors = torch.randn(b, self.window, self.num_stocks, self.num_factors, generator=g)
        day_of_week = torch.arange(self.window + self.horizon).remainder(WEEKDAYS).expand(b, -1).contiguous()
        return returns, factors, day_of_week

    def export_spec(self) -> dict:
        t1, t2, n, f = self.window, self.horizon, self.num_stocks, self.num_factors
        return {
            "inputs": {
                "returns": {"shape": ["B", t1, n], "dtype": "float32"},
                "factors": {"shape": ["B", t1, n, f], "dtype": "float32"},
                "day_of_week": {"shape": ["B", t1 + t2], "dtype": "int64"},
            },
            "outputs": {
                "predicted_returns": {"shape": ["B", t2, n], "dtype": "float32"},
                "up_probability": {"shape": ["B", t2, n], "dtype": "float32"},
            },
            "tickers": self.tickers,
            "factor_names": self.factor_names,
        }
