"""How a raw OHLCV + indicator window becomes the model's input, and the next close its target (torch, so
that the same arithmetic runs in training, in the exported graph and in predict).

Two normalisations (`data.normalization`):
- `relative` (default): every price-valued column is read relative to the window's last close
  (log(value / last_close); MACD lines, which are price differences, as value / last_close), volume as
  log1p, oscillators (RSI, CCI) as they are; the target is the log return log(next_close / last_close).
  Price levels then never leave the range seen in training, although crypto prices grew 50x between the
  train and test periods of the embedded series.
- `raw` (the paper's description: min-max scaled raw values): columns and target as they are.
Either way a train-fitted affine scaler follows (`shift`, `scale`, stored as model buffers).
"""

from __future__ import annotations

import torch

from common.errors import check_choice

NORMALIZATIONS = ("relative", "raw")
PRICE_PREFIXES = ("open", "high", "low", "close", "sma", "ema", "bb_")
PRICE_DIFFS = ("macd",)


def column_kind(name: str) -> str:
    """'price' (a USD level), 'price_diff' (a USD difference), 'volume' or 'other' (scale-free)."""
    if name.startswith(PRICE_DIFFS):
        return "price_diff"
    if name.startswith(PRICE_PREFIXES):
        return "price"
    if name.startswith("volume"):
        return "volume"
    return "other"


def kind_masks(feature_names: list[str]) -> dict[str, torch.Tensor]:
    kinds = [column_kind(n) for n in feature_names]
    return {k: torch.tensor([c == k for c in kinds]) for k in ("price", "price_diff", "volume")}


def normalize_window(
    x: torch.Tensor, masks: dict[str, torch.Tensor], close_index: int, normalization: str
) -> torch.Tensor:
    """x [N, L, F] raw values -> [N, L, F] normalised (before the affine scaler)."""
    check_choice("normalization", normalization, NORMALIZATIONS)
    if normalization == "raw":
        return x
    last_close = x[:, -1:, close_index : close_index + 1]  # [N, 1, 1]
    # torch.where keeps the graph free of in-place masked writes (ONNX friendly); clamp keeps log finite
    price = torch.log(x.clamp_min(1e-12) / last_close)
    diff = x / last_close
    volume = torch.log1p(x.clamp_min(0.0))
    out = torch.where(masks["price"].to(x.device), price, x)
    out = torch.where(masks["price_diff"].to(x.device), diff, out)
    return torch.where(masks["volume"].to(x.device), volume, out)


def target_from_close(next_close: torch.Tensor, last_close: torch.Tensor, normalization: str) -> torch.Tensor:
    """The value the network regresses (before scaling): log return (relative) or the close itself (raw)."""
    return torch.log(next_close / last_close) if normalization == "relative" else next_close


def close_from_target(target: torch.Tensor, last_close: torch.Tensor, normalization: str) -> torch.Tensor:
    """Inverse of `target_from_close`: the next close in USD."""
    return last_close * torch.exp(target) if normalization == "relative" else target
