"""RISP: the 14 rotation-invariant surface properties of RISurConv (arXiv 2408.06110, Sec. 3.1), per centre p
with reference normal n_p and its k neighbours ordered around n_p.

Every quantity is a length, a dot product of unit vectors or normals, or a dot product of two cross products,
so rotating points and normals together leaves them unchanged; the neighbour order is defined by angles
measured around n_p from a reference neighbour chosen by a rotation-invariant rule (the longest projection on
the tangent plane), so it does not change either.
"""

from __future__ import annotations

import functools
import math

import torch

from common.pointcloud.ops import full_precision, gather_points

EPS = 1e-7  # the official code's epsilon in unit vectors: a zero vector stays zero, never NaN


def geometry(fn):
    """Run `fn` on at least float32 tensors with autocast off: under bf16 mixed precision the eigen-solver has no
    bf16 kernel and products of coordinates would lose the precision the invariance rests on."""

    @functools.wraps(fn)
    def wrapper(*tensors: torch.Tensor):
        with torch.autocast(tensors[0].device.type, enabled=False):
            return fn(*full_precision(*tensors))

    return wrapper


def unit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a - b) / |a - b|, zero where a == b."""
    d = a - b
    return d / (d.norm(dim=-1, keepdim=True) + EPS)


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


def order_neighbours(local: torch.Tensor, normal: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Reorder `idx` [B, S, k] so that the neighbours' offsets `local` [B, S, k, 3] sweep counter-clockwise
    around `normal` [B, S, 3], starting at the neighbour with the longest projection on the tangent plane.

    Neighbours with no tangent component (the centre itself, a point straight above it) go last, in their kNN
    order. The official code sorts a signed cosine instead; this is the same sweep with the angle made exact
    at the reference (it is forced to 0, so round-off cannot send it to 2*pi under a rotation).
    """
    n = normal.unsqueeze(2)
    proj = local - dot(local, n) * n
    length = proj.norm(dim=-1)
    ref_pos = length.argmax(-1, keepdim=True)  # [B, S, 1]
    u = proj / (length.unsqueeze(-1) + EPS)
    ref = u.gather(2, ref_pos.unsqueeze(-1).expand(-1, -1, 1, 3))
    angle = torch.atan2(dot(torch.cross(ref.expand_as(u), u, dim=-1), n), dot(u, ref)).squeeze(-1)
    angle = torch.remainder(angle, 2 * math.pi)
    angle = angle.scatter(2, ref_pos, 0.0)
    scale = length.amax(-1, keepdim=True)
    angle = torch.where(length > 1e-6 * scale, angle, 4 * math.pi)  # degenerate: last
    order = angle.argsort(dim=-1, stable=True)
    return idx.gather(2, order)


def _edge(x1, n1, x2, n2):
    """Two sines of the angles between the edge x1 - x2 and the normals at its ends, and its length."""
    d = x1 - x2
    length = d.norm(dim=-1, keepdim=True)
    u = d / (length + EPS)
    return -dot(u, n1), dot(u, n2), length


@geometry
def risp_features(
    xyz: torch.Tensor, normals: torch.Tensor, centres: torch.Tensor, centre_normals: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 14 RISP features [B, S, k, 14] of each centre's neighbours `idx` [B, S, k] (indices into `xyz`
    [B, N, 3] / `normals`), and the ordered indices.

    Triangle (p, x_i, x_{i-1}): |p x_i|, the edge sines of (p, x_i), (p, x_{i-1}), (x_i, x_{i-1}) and the angles
    at p and at x_{i-1}; triangle (p, x_i, x_{i+1}): two angles, two normal angles at x_{i+1} and the product of
    the two triangles' (unnormalised) normals. x_{i +- 1} are s steps around the ring, s = 2 from 1,024 centres on
    (the official rule).
    """
    b, s, k = idx.shape
    idx = order_neighbours(gather_points(xyz, idx) - centres.unsqueeze(2), centre_normals, idx)
    xi = gather_points(xyz, idx) - centres.unsqueeze(2)  # centred: p is the origin
    ni = gather_points(normals, idx)
    p = torch.zeros_like(xi)
    np_ = centre_normals.unsqueeze(2).expand_as(xi)
    shift = 2 if s >= 1024 else 1
    x3, n3 = xi.roll(shift, dims=2), ni.roll(shift, dims=2)  # x_{i-1}
    x4, n4 = xi.roll(-shift, dims=2), ni.roll(-shift, dims=2)  # x_{i+1}

    s10, s20, l0 = _edge(p, np_, xi, ni)
    s11, s21, _ = _edge(p, np_, x3, n3)
    s12, s22, _ = _edge(xi, ni, x3, n3)
    angle_p = dot(unit(p, xi), unit(p, x3))
    angle_3 = dot(unit(x3, p), unit(x3, xi))

    p4, pi, i4, p3 = unit(x4, p), unit(xi, p), unit(x4, xi), unit(x3, p)
    planes = dot(torch.cross(p4, pi, dim=-1), torch.cross(p3, pi, dim=-1))
    second = [dot(p4, pi), dot(p4, i4), dot(i4, n4), dot(pi, n4), planes]
    feats = torch.cat([l0, s10, s20, angle_p, s11, s21, angle_3, s12, s22, *second], dim=-1)
    return feats, idx


@geometry
def lra(local: torch.Tensor) -> torch.Tensor:
    """Local reference axis [B, S, 3] of offsets `local` [B, S, k, 3]: the eigenvector of the smallest eigenvalue
    of the covariance weighted by (max distance - distance), as the official group-all stage.

    Its sign is fixed by the third moment along it (sum of cubed projections >= 0); the official code leaves
    the sign to the eigen-solver, which a rotation can flip, and then the features are not invariant.
    """
    dist = local.norm(dim=-1, keepdim=True)
    w = dist.amax(2, keepdim=True) - dist
    w = w / w.sum(2, keepdim=True).clamp_min(1e-12)
    cov = local.transpose(-1, -2) @ (w * local)
    axis = torch.linalg.eigh(cov)[1][..., 0]
    sign = torch.where((local @ axis.unsqueeze(-1)).pow(3).sum((-2, -1)) < 0, -1.0, 1.0)
    return axis * sign.unsqueeze(-1).to(axis.dtype)
