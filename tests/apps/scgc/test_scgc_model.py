"""SCGC / SCGC* model: shapes, soft assignment, gradients, parameter count, argument checks."""

import pytest
import torch

from apps.scgc.model import SCGC
from common.errors import ConfigError

SMALL = {"hidden": (16, 16, 32), "n_z": 4}


def test_forward_shapes_and_rows_sum_to_one():
    torch.manual_seed(0)
    model = SCGC(20, 3, **SMALL)
    q, z = model(torch.randn(7, 20))
    assert q.shape == (7, 3) and z.shape == (7, 4)
    assert torch.all(q > 0)
    torch.testing.assert_close(q.sum(1), torch.ones(7))


def test_soft_assign_is_student_t():
    torch.manual_seed(0)
    model = SCGC(6, 4, hidden=(8,), n_z=3, v=2.0)
    z = torch.randn(5, 3)
    d2 = ((z[:, None, :] - model.mu[None]) ** 2).sum(-1)
    want = (1 + d2 / 2.0) ** (-(2.0 + 1) / 2)
    want = want / want.sum(1, keepdim=True)
    torch.testing.assert_close(model.soft_assign(z), want)


def test_sphere_space_measures_scaled_directions():
    """space="sphere": q depends on z only through z/|z| (scaling a row changes nothing) and compares
    z_scale * z/|z| with mu by the same Student-t kernel."""
    torch.manual_seed(0)
    model = SCGC(6, 4, hidden=(8,), n_z=3, space="sphere")
    model.z_scale.fill_(2.5)
    z = torch.randn(5, 3)
    q = model.soft_assign(z)
    torch.testing.assert_close(model.soft_assign(z * torch.rand(5, 1).add(0.5)), q)
    raw = SCGC(6, 4, hidden=(8,), n_z=3)
    raw.mu.data.copy_(model.mu.data)
    torch.testing.assert_close(raw.soft_assign(2.5 * z / z.norm(dim=1, keepdim=True)), q)


@pytest.mark.parametrize("variant", ["scgc", "scgc_star"])
def test_every_parameter_gets_a_gradient(variant):
    torch.manual_seed(0)
    model = SCGC(12, 3, variant=variant, **SMALL)
    x = torch.randn(9, 12)
    z = model.encode(x)
    loss = model.soft_assign(z).log().mean() + z.pow(2).mean()
    if variant == "scgc":
        loss = loss + (model.decode(z) - x).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_scgc_star_has_half_the_parameters_and_no_decoder():
    full, star = SCGC(1433, 7), SCGC(1433, 7, variant="scgc_star")
    n_full = sum(p.numel() for p in full.parameters())
    n_star = sum(p.numel() for p in star.parameters())
    assert star.decoder is None and full.decoder is not None
    assert 0.45 < n_star / n_full < 0.55, (n_star, n_full)
    with pytest.raises(RuntimeError, match="no decoder"):
        star.decode(torch.zeros(1, 10))
    assert full.decode(torch.zeros(2, 10)).shape == (2, 1433)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"variant": "gcn"}, "variant"),
        ({"n_clusters": 1}, "n_clusters"),
        ({"in_dim": 0}, "in_dim"),
        ({"n_z": 0}, "n_z"),
        ({"v": 0.0}, "v"),
        ({"hidden": []}, "hidden"),
        ({"hidden": ["wide"]}, "hidden"),
        ({"space": "cosine"}, "space"),
    ],
)
def test_bad_arguments_name_the_key(kwargs, key):
    args = {"in_dim": 10, "n_clusters": 3} | kwargs
    with pytest.raises(ConfigError) as err:
        SCGC(**args)
    assert err.value.key == key


def test_export_spec_matches_forward():
    model = SCGC(11, 5, **SMALL)
    spec = model.export_spec()
    (x,) = model.example_inputs()
    q, z = model(x)
    assert list(spec["inputs"]) == ["x"] and list(spec["outputs"]) == ["q", "z"]
    assert spec["inputs"]["x"]["shape"] == ["N", 11] and x.shape[1] == 11 and x.dtype == torch.float32
    assert spec["outputs"]["q"]["shape"] == ["N", 5] and q.shape[1] == 5
    assert spec["outputs"]["z"]["shape"] == ["N", 4] and z.shape[1] == 4
