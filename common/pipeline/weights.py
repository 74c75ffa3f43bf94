"""An export's `model.safetensors` into its model: every way the file can be wrong gets the file and tensor named."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from common.errors import WeightsError


def _shape(t: torch.Tensor) -> str:
    return f"shape {list(t.shape)}"


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load `path` into `model`, refusing a file that is not safetensors, has missing, extra or misshapen
    tensors, or NaN values (a diverged run's weights predict nothing)."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(path, f"not a readable safetensors file ({exc})") from None
    expected = model.state_dict()
    for name in sorted(expected.keys() | state.keys()):
        if name not in state:
            raise WeightsError(path, "missing tensor", name, f"{_shape(expected[name])}, as the model has")
        if name not in expected:
            raise WeightsError(path, "unexpected tensor", name, "only the tensors of the model that model.yaml builds")
        got = state[name]
        if got.shape != expected[name].shape:
            raise WeightsError(path, f"wrong {_shape(got)}", name, _shape(expected[name]))
        if got.is_floating_point() and bool(got.isnan().any()):
            raise WeightsError(path, "NaN values", name, "finite weights")
    model.load_state_dict(state)
