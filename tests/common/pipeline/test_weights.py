"""A broken `model.safetensors` ends in a WeightsError naming the file and the tensor, never a traceback."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import save_file

from common.errors import WeightsError
from common.pipeline.build import build_model
from common.pipeline.export import load

MODEL_YAML = "_target_: apps.scgc.model.SCGC\nin_dim: 8\nn_clusters: 3\nhidden: [6, 5]\nn_z: 4\n"


@pytest.fixture
def folder(tmp_path):
    """An export folder of a small SCGC, as `make export` writes it, and the model's own weights."""
    (tmp_path / "export.json").write_text(json.dumps({"app": "scgc"}))
    (tmp_path / "model.yaml").write_text(MODEL_YAML)
    model = build_model(OmegaConf.create(yaml.safe_load(MODEL_YAML)))
    state = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    return tmp_path, state


def test_a_good_file_loads_exactly(folder):
    path, state = folder
    model = load(path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "not a readable safetensors file"),  # truncated
        (lambda b: b"", "not a readable safetensors file.*header too small"),  # empty
        (lambda b: b[:5], "not a readable safetensors file"),
    ],
    ids=["truncated", "empty", "five-bytes"],
)
def test_a_damaged_file_is_named(folder, damage, message):
    path, _ = folder
    weights = path / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(WeightsError, match=f"{message}.*{weights}"):
        load(path)


def test_a_pickled_file_is_named_and_never_unpickled(folder):
    path, state = folder
    torch.save(state, path / "model.safetensors")  # a torch pickle under the safetensors name
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load(path)


def _rewrite(path, state):
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(WeightsError) as info:
        load(path)
    return info.value


def test_a_missing_tensor_is_named(folder):
    path, state = folder
    name = sorted(state)[1]
    err = _rewrite(path, {k: v for k, v in state.items() if k != name})
    assert err.tensor == name and "missing tensor" in str(err) and str(path / "model.safetensors") in str(err)


def test_an_extra_tensor_is_named(folder):
    path, state = folder
    err = _rewrite(path, state | {"sneaky.weight": torch.zeros(2)})
    assert err.tensor == "sneaky.weight" and "unexpected tensor" in str(err)


def test_a_wrong_shape_is_named_with_both_shapes(folder):
    path, state = folder
    name = next(k for k, v in sorted(state.items()) if v.ndim == 2)
    rows, cols = state[name].shape
    err = _rewrite(path, state | {name: torch.zeros(rows + 1, cols)})
    assert err.tensor == name and f"[{rows + 1}, {cols}]" in str(err) and f"[{rows}, {cols}]" in err.expected


def test_nan_weights_are_refused_with_the_tensor_name(folder):
    path, state = folder
    name = sorted(state)[-1]
    poisoned = state[name].clone()
    poisoned.view(-1)[0] = float("nan")
    err = _rewrite(path, state | {name: poisoned})
    assert err.tensor == name and "NaN" in str(err)
