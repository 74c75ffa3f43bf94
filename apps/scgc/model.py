"""SCGC and SCGC*: an MLP (auto)encoder plus DEC-style cluster centres; no graph convolution anywhere.

Kulatilleke, Portmann, Chandra, "Self-Supervised Contrastive Graph Clustering" (arXiv 2204.12656).
The graph only enters training, through the neighbour-contrastive target (`apps.scgc.losses`); at
inference the model maps node features to soft cluster assignments without the graph.

- `variant="scgc"`: the SDCN autoencoder x -> 500 -> 500 -> 2000 -> z (ReLU between layers, none on z)
  and its mirror decoder z -> 2000 -> 500 -> 500 -> x_hat (trained with a reconstruction term).
- `variant="scgc_star"` (SCGC*, `SCGC_TRIM` in the official code): the same encoder, no decoder, so
  about half the parameters.
- `mu` [K, n_z]: cluster centres, initialised by KMeans on z (done by the Lightning module).
- Student-t soft assignment q_ij ∝ (1 + ||z_i - mu_j||² / v)^(-(v+1)/2), rows sum to 1.
- `space`: where q measures distances. "raw": z itself (the paper). "sphere" (an app deviation): s * z/|z|,
  the cosine geometry that L_NC shapes, with s = the buffer `z_scale` (the mean |z| when the centres were
  initialised), so q is as sharp as on raw z. KMeans then initialises the centres in the same space, so the
  first argmax q is exactly the KMeans partition (with raw q it lost ~0.01 ACC on Cora; README).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import ConfigError, check_choice, check_range

VARIANTS = ("scgc", "scgc_star")
SPACES = ("raw", "sphere")


def _check_int(key: str, value, low: int) -> None:
    check_range(key, value, low)
    if int(value) != value:
        raise ConfigError(key, value, f"an integer >= {low}")


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers through `widths` with ReLU between them and none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def build_decoder(in_dim: int, hidden: tuple[int, ...], n_z: int) -> nn.Sequential:
    """The mirror decoder z -> hidden[::-1] -> in_dim (SCGC keeps it; SCGC* uses one only to pre-train)."""
    return mlp([n_z, *reversed(hidden), in_dim])


class SCGC(nn.Module):
    """SCGC / SCGC* model. `forward(x) -> (q, z)` is the inference (and export) graph."""

    def __init__(
        self,
        in_dim: int,
        n_clusters: int,
        variant: str = "scgc",
        hidden: tuple[int, ...] | list[int] = (500, 500, 2000),
        n_z: int = 10,
        v: float = 1.0,
        space: str = "raw",
    ):
        super().__init__()
        _check_int("in_dim", in_dim, 1)
        _check_int("n_clusters", n_clusters, 2)
        check_choice("variant", variant, VARIANTS)
        _check_int("n_z", n_z, 1)
        check_range("v", v, 0.0, low_inclusive=False)
        check_choice("space", space, SPACES)
        try:
            hidden = tuple(int(h) for h in hidden)
        except (TypeError, ValueError):
            raise ConfigError("hidden", hidden, "a list of positive layer widths") from None
        if not hidden or min(hidden) < 1:
            raise ConfigError("hidden", list(hidden), "a non-empty list of positive layer widths")

        in_dim, n_clusters, n_z = int(in_dim), int(n_clusters), int(n_z)
        self.in_dim, self.n_clusters, self.variant = in_dim, n_clusters, variant
        self.hidden, self.n_z, self.v, self.space = hidden, n_z, float(v), space
        self.encoder = mlp([in_dim, *hidden, n_z])
        self.decoder = build_decoder(in_dim, hidden, n_z) if variant == "scgc" else None
        self.mu = nn.Parameter(torch.empty(n_clusters, n_z))
        nn.init.xavier_normal_(self.mu)  # as the official code; overwritten by KMeans before training
        self.register_buffer("z_scale", torch.ones(()))  # space="sphere": the sphere's radius, set with the centres

    # ---- training-time pieces -------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Node embeddings z [N, n_z]."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Reconstruction x_hat [N, in_dim]; SCGC only (SCGC* has no decoder)."""
        if self.decoder is None:
            raise RuntimeError("SCGC* (variant='scgc_star') has no decoder")
        return self.decoder(z)

    def assign_space(self, z: Tensor) -> Tensor:
        """z where q measures it: z itself (space="raw") or z_scale * z/|z| (space="sphere")."""
        return z if self.space == "raw" else self.z_scale * F.normalize(z, dim=1)

    def soft_assign(self, z: Tensor) -> Tensor:
        """Student-t soft assignment q [N, K] of embeddings to the centres `mu`; rows sum to 1."""
        d2 = (self.assign_space(z).unsqueeze(1) - self.mu.unsqueeze(0)).pow(2).sum(-1)
        q = (1.0 + d2 / self.v).pow(-(self.v + 1.0) / 2.0)
        return q / q.sum(dim=1, keepdim=True)

    # ---- inference / export ---------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encode(x)
        return self.soft_assign(z), z

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.rand(4, self.in_dim),)

    def export_spec(self) -> dict:
        return {
            "inputs": {"x": {"shape": ["N", self.in_dim], "dtype": "float32"}},
            "outputs": {
                "q": {"shape": ["N", self.n_clusters], "dtype": "float32"},
                "z": {"shape": ["N", self.n_z], "dtype": "float32"},
            },
        }
