"""The Jacobian determinant, SDlogJ and folding of common/medical/jacobian.py against analytic fields."""

from __future__ import annotations

import math

import torch

from common.medical.jacobian import folding_percent, jacobian_determinant, sdlogj

S = 24


def grid() -> torch.Tensor:
    return torch.stack(torch.meshgrid(*(torch.arange(S, dtype=torch.float64),) * 3, indexing="ij"))  # [3, S, S, S]


def test_affine_field_has_the_constant_determinant_det_i_plus_a():
    """u(x) = A x + t: finite differences are exact, border included, so det = det(I + A) everywhere."""
    a = torch.tensor([[0.10, -0.20, 0.05], [0.30, -0.10, 0.00], [-0.05, 0.15, 0.20]], dtype=torch.float64)
    ddf = (torch.einsum("ik,kxyz->ixyz", a, grid()) + torch.tensor([1.0, -2.0, 0.5])[:, None, None, None])[None]
    det = jacobian_determinant(ddf)
    torch.testing.assert_close(det, torch.full_like(det, float(torch.linalg.det(torch.eye(3) + a))))
    assert float(sdlogj(det)) < 1e-12 and float(folding_percent(det)) == 0.0


def test_sinusoidal_field_matches_the_analytic_determinant():
    """u_1 = a sin(k x_1): det = 1 + a k cos(k x_1); the central difference has relative error ~ k^2 / 6."""
    a, k = 1.5, 2 * math.pi / 12
    x = grid()
    ddf = torch.zeros(1, 3, S, S, S, dtype=torch.float64)
    ddf[0, 1] = a * torch.sin(k * x[1])
    det = jacobian_determinant(ddf)[0, :, 1:-1]  # interior along the varying axis (the border is one-sided)
    want = 1 + a * k * torch.cos(k * x[1, :, 1:-1])
    torch.testing.assert_close(det, want, atol=a * k * k**2 / 6 * 1.01, rtol=0)


def test_folding_and_sdlogj_of_a_folding_field():
    """u_2 = (2 / k) sin(k x_2), k = 2 pi / 12: det = 1 + 2 cos(k x_2) folds where cos < -1/2. On the grid the
    central difference gives 1 + 2 (sin k / k) cos(k x_2), <= 0 at x_2 = 5, 6, 7 of every 12 (at 4 and 8,
    cos = -1/2 and sin k / k < 1 keep it positive): 25 % of the interior voxels."""
    k = 2 * math.pi / 12
    x = grid()
    ddf = torch.zeros(1, 3, S, S, S, dtype=torch.float64)
    ddf[0, 2] = (2 / k) * torch.sin(k * x[2])
    det = jacobian_determinant(ddf)
    interior = det[:, :, :, 1:-1]
    torch.testing.assert_close(interior[0], 1 + 2 * (math.sin(k) / k) * torch.cos(k * x[2, :, :, 1:-1]))
    folded = float(folding_percent(det[:, :, :, 1 : -1 - 10]))  # x_2 = 1..12, one whole period
    assert abs(folded - 25.0) < 1e-9, folded
    assert float(sdlogj(det)) > 3.0  # clipped logs of the folded voxels (down to log 1e-9) dominate


def test_identity_and_batches():
    det = jacobian_determinant(torch.zeros(3, 3, 8, 8, 8))
    assert det.shape == (3, 8, 8, 8) and torch.equal(det, torch.ones_like(det))
    assert sdlogj(det).shape == (3,) and folding_percent(det).tolist() == [0.0, 0.0, 0.0]
