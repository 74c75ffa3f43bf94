"""RISurConv (Zhang et al., ECCV 2024, arXiv 2408.06110): rotation-invariant surface attention-augmented
convolutions, for classification and part segmentation; and the non-invariant PointNet baseline.

Input: clouds [B, N, 6] (xyz on the unit sphere + unit normals). Features are [B, S, (k,) C]; the official
code's 1x1 convolutions are Linear layers over the last dim, with BatchNorm over all the other dims.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apps.risurconv.features import lra, risp_features
from common.attention import build
from common.errors import ConfigError, check_choice, check_range
from common.layers.transformer_block import TransformerBlock
from common.pointcloud.ops import farthest_point_sample, gather_points, knn

RISP_DIM = 14


class LinearBN(nn.Module):
    """Linear + BatchNorm over the last dim of [..., C] (the official Conv1x1 + BN)."""

    def __init__(self, c_in: int, c_out: int, bias: bool = True):
        super().__init__()
        self.linear, self.norm = nn.Linear(c_in, c_out, bias=bias), nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return self.norm(y.flatten(0, -2)).view_as(y)


class SurfaceBlock(nn.Module):
    """The part shared by set abstraction and feature propagation: RISP of each centre's ordered neighbours ->
    embedding (14 -> 32 -> 64) -> offset attention over the k neighbours -> concat the neighbours' previous
    features -> Linear+BN+ReLU -> max over k -> offset attention over the centres."""

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1):
        super().__init__()
        self.embed = nn.Sequential(LinearBN(RISP_DIM, 32, bias=False), LinearBN(32, 64, bias=False))
        self.local_attn = build("offset", 64, heads)
        self.conv = LinearBN(64 + in_channels, out_channels)
        self.global_attn = build("offset", out_channels, heads)

    def forward(self, xyz, normals, feats, centres, centre_normals, idx) -> torch.Tensor:
        risp, idx = risp_features(xyz, normals, centres, centre_normals, idx)
        b, s, k, _ = risp.shape
        x = F.relu(self.embed(risp))
        x = self.local_attn(x.flatten(0, 1)).view(b, s, k, -1)
        if feats is not None:
            x = torch.cat([x, gather_points(feats, idx)], dim=-1)
        x = F.relu(self.conv(x)).amax(2)
        return self.global_attn(x)


class RISurConvSetAbstraction(nn.Module):
    """FPS to `npoint` centres and kNN (k) grouping; or, with `npoint=None`, one group of all points around
    their centroid with the LRA as reference normal. -> (centres, their normals, features [B, S, C_out])."""

    def __init__(self, npoint: int | None, k: int | None, in_channels: int, out_channels: int, heads: int = 1):
        super().__init__()
        self.npoint, self.k = npoint, k
        self.block = SurfaceBlock(in_channels, out_channels, heads)

    def forward(self, xyz, normals, feats):
        if self.npoint is None:  # group all; centred at the centroid (the official code keeps the origin)
            centres = xyz.mean(1, keepdim=True)
            centre_normals = lra(xyz.unsqueeze(1) - centres.unsqueeze(2))
            idx = torch.arange(xyz.shape[1], device=xyz.device).expand(xyz.shape[0], 1, -1)
        else:
            fps = farthest_point_sample(xyz, self.npoint)
            centres, centre_normals = gather_points(xyz, fps), gather_points(normals, fps)
            idx = knn(centres, xyz, self.k)[1]
        return centres, centre_normals, self.block(xyz, normals, feats, centres, centre_normals, idx)


class RISurConvFeaturePropagation(nn.Module):
    """Up-sampling (RIConv2FeaturePropagation): each fine point groups its k nearest coarse points, the surface
    block turns them and their features into one vector, which is concatenated with the fine point's own
    features (skip) and passed through an MLP."""

    def __init__(self, k: int, coarse_channels: int, out_channels: int, skip_channels: int, mlp: list[int], heads=1):
        super().__init__()
        self.k = k
        self.block = SurfaceBlock(coarse_channels, out_channels, heads)
        widths = [out_channels + skip_channels, *mlp]
        self.mlp = nn.ModuleList(LinearBN(a, b) for a, b in zip(widths, widths[1:]))

    def forward(self, fine_xyz, fine_normals, fine_feats, coarse_xyz, coarse_normals, coarse_feats):
        idx = knn(fine_xyz, coarse_xyz, min(self.k, coarse_xyz.shape[1]))[1]
        x = self.block(coarse_xyz, coarse_normals, coarse_feats, fine_xyz, fine_normals, idx)
        x = torch.cat([x, fine_feats], -1)
        for layer in self.mlp:
            x = F.relu(layer(x))
        return x


def _check_stages(npoints, ks, widths, num_points):
    if not (len(npoints) == len(ks) and len(widths) in (len(npoints), len(npoints) + 1)):
        raise ConfigError("npoints", list(npoints), f"as many stages as ks ({len(ks)}) and widths")
    check_range("num_points", num_points, 1)
    last = num_points
    for i, (m, k) in enumerate(zip(npoints, ks)):
        check_range(f"npoints[{i}]", m, 1, last)
        check_range(f"ks[{i}]", k, 1, last)
        last = m


class ExportMixin:
    num_points: int

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        xyz = torch.rand(2, self.num_points, 3, generator=g) * 2 - 1
        normals = F.normalize(torch.randn(2, self.num_points, 3, generator=g), dim=-1)
        points = torch.cat([xyz, normals], -1)
        if getattr(self, "task", "cls") == "partseg":
            return points, F.one_hot(torch.tensor([0, 1]) % self.num_categories, self.num_categories).float()
        return (points,)

    def export_spec(self) -> dict:
        inputs = {"points": {"shape": ["B", self.num_points, 6], "dtype": "float32"}}
        if getattr(self, "task", "cls") == "partseg":
            inputs["category"] = {"shape": ["B", self.num_categories], "dtype": "float32"}
            logits = {"shape": ["B", self.num_points, self.num_classes], "dtype": "float32"}
        else:
            logits = {"shape": ["B", self.num_classes], "dtype": "float32"}
        return {"inputs": inputs, "outputs": {"logits": logits}}


class RISurConvClassifier(ExportMixin, nn.Module):
    """`get_model` of the official classification code: set-abstraction blocks (the last groups all points),
    a transformer encoder on the single global token, and an MLP head. Returns logits [B, classes].

    Paper (n = 2): npoints (1024, 512, 256, 128), ks (8, 16, 32, 64), widths (32, 64, 128, 256, 512), transformer
    d 512, 8 heads, 3 layers, dropout 0.05. The transformer is the shared pre-norm block with softmax attention
    (the official: torch's post-norm nn.TransformerEncoderLayer); on one token either is a residual MLP stack.
    """

    def __init__(
        self,
        num_classes: int,
        num_points: int = 1024,
        npoints=(256, 128, 64, 32),
        ks=(8, 16, 16, 16),
        widths=(32, 64, 128, 128, 256),
        heads: int = 1,
        transformer_layers: int = 1,
        transformer_heads: int = 4,
        transformer_dropout: float = 0.05,
        dropout: float = 0.4,
    ):
        super().__init__()
        _check_stages(npoints, ks, widths, num_points)
        if len(widths) != len(npoints) + 1:
            raise ConfigError("widths", list(widths), f"{len(npoints) + 1} widths: one per stage and the group-all")
        check_range("num_classes", num_classes, 2)
        self.num_classes, self.num_points = num_classes, num_points
        stages = [*zip(npoints, ks), (None, None)]
        ins = [0, *widths[:-1]]
        self.stages = nn.ModuleList(
            RISurConvSetAbstraction(m, k, c_in, c_out, heads) for (m, k), c_in, c_out in zip(stages, ins, widths)
        )
        d = widths[-1]
        self.transformer = nn.ModuleList(
            TransformerBlock(d, transformer_heads, "softmax", {"attn_drop": transformer_dropout})
            for _ in range(transformer_layers)
        )
        self.head = nn.Sequential(
            nn.Linear(d, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )  # fmt: skip

    def features(self, points: torch.Tensor) -> torch.Tensor:
        """The global feature [B, C] after the transformer."""
        xyz, normals, feats = points[..., :3], points[..., 3:], None
        for stage in self.stages:
            xyz, normals, feats = stage(xyz, normals, feats)
        for block in self.transformer:
            feats = block(feats)
        return feats[:, 0]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(points))


class RISurConvPartSeg(ExportMixin, nn.Module):
    """The official part-segmentation network: set abstraction down (no group-all), feature propagation up,
    the object category's one-hot as the finest skip features, and a per-point head. Returns logits
    [B, N, parts].

    Paper: npoints (512, 256, 128, 64), ks (8, 16, 32, 64), widths (64, 128, 256, 512), fp_ks (32, 32, 32, 64)
    (one per level, the input level first)."""

    def __init__(
        self,
        num_classes: int,
        num_categories: int,
        num_points: int = 1024,
        npoints=(256, 128, 64, 32),
        ks=(8, 16, 16, 16),
        widths=(32, 64, 128, 128),
        fp_ks=(16, 16, 16, 16),
        heads: int = 1,
        dropout: float = 0.4,
    ):
        super().__init__()
        _check_stages(npoints, ks, widths, num_points)
        if len(widths) != len(npoints) or len(fp_ks) != len(npoints):
            raise ConfigError("widths", list(widths), f"{len(npoints)} widths and fp_ks, one per stage")
        check_range("num_classes", num_classes, 2)
        check_range("num_categories", num_categories, 1)
        self.task, self.num_classes, self.num_categories = "partseg", num_classes, num_categories
        self.num_points = num_points
        ins = [0, *widths[:-1]]
        self.down = nn.ModuleList(
            RISurConvSetAbstraction(m, k, c_in, c_out, heads) for m, k, c_in, c_out in zip(npoints, ks, ins, widths)
        )
        # up from level i+1 to level i (coarsest first), as the official fp3..fp0: the block keeps the coarse
        # width, the skip is level i's features (the category one-hot at the input), then an MLP to widths[i]
        up, coarse = [], widths[-1]
        for i in reversed(range(len(widths))):
            skip, mlp = (widths[i - 1], [widths[i]]) if i > 0 else (num_categories, [])
            up.append(RISurConvFeaturePropagation(fp_ks[i], coarse, coarse, skip, mlp, heads))
            coarse = mlp[-1] if mlp else coarse + skip
        self.up = nn.ModuleList(up)
        self.head = nn.Sequential(LinearBN(coarse, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, num_classes))

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        xyz, normals, feats = points[..., :3], points[..., 3:], None
        levels = [(xyz, normals, category.unsqueeze(1).expand(-1, points.shape[1], -1))]
        for stage in self.down:
            xyz, normals, feats = stage(xyz, normals, feats)
            levels.append((xyz, normals, feats))
        coarse = levels.pop()
        for stage in self.up:
            fine = levels.pop()
            feats = stage(*fine, coarse[0], coarse[1], feats)
            coarse = fine
        return self.head(feats)


class PointNet(ExportMixin, nn.Module):
    """The non-invariant baseline: vanilla PointNet (Qi et al., CVPR 2017) without its T-Nets, on xyz+normals.
    A shared per-point MLP, max-pooling to a global feature, and the classifier's head; for part segmentation
    each point's features, the global feature and the category one-hot go through a per-point MLP."""

    def __init__(
        self,
        num_classes: int,
        num_points: int = 1024,
        task: str = "cls",
        num_categories: int | None = None,
        widths=(64, 128, 256, 512),
        dropout: float = 0.4,
    ):
        super().__init__()
        check_choice("task", task, ("cls", "partseg"))
        check_range("num_classes", num_classes, 2)
        self.task, self.num_classes, self.num_categories = task, num_classes, num_categories
        self.num_points = num_points
        ws = [6, *widths]
        self.mlp = nn.ModuleList(LinearBN(a, b) for a, b in zip(ws, ws[1:]))
        if task == "cls":
            self.head = nn.Sequential(
                nn.Linear(ws[-1], 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(128, num_classes),
            )  # fmt: skip
        else:
            check_range("num_categories", num_categories, 1)
            seg_in = sum(ws[1:]) + ws[-1] + num_categories
            self.seg = nn.Sequential(LinearBN(seg_in, 256), nn.ReLU(), LinearBN(256, 128), nn.ReLU())
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(128, num_classes))

    def forward(self, points: torch.Tensor, category: torch.Tensor | None = None) -> torch.Tensor:
        x, per_point = points, []
        for layer in self.mlp:
            x = F.relu(layer(x))
            per_point.append(x)
        pooled = x.amax(1)
        if self.task == "cls":
            return self.head(pooled)
        n = points.shape[1]
        extra = [pooled.unsqueeze(1).expand(-1, n, -1), category.unsqueeze(1).expand(-1, n, -1)]
        return self.head(self.seg(torch.cat([*per_point, *extra], -1)))


def create(
    num_classes: int,
    arch: str = "risurconv",
    task: str = "cls",
    num_points: int = 1024,
    num_categories: int | None = None,
    class_names: list[str] | None = None,
    category_parts: list[list[int]] | None = None,
    risurconv: dict | None = None,
    risurconv_partseg: dict | None = None,
    pointnet: dict | None = None,
) -> nn.Module:
    """The model of `arch` (risurconv | pointnet) for `task` (cls | partseg), with that architecture's options
    (`risurconv` for classification, `risurconv_partseg`, or `pointnet`). `class_names` (the classes, or the
    object categories for part segmentation) and `category_parts` (each category's part ids) come from the data
    and ride along on the model for its predictions."""
    check_choice("arch", arch, ("risurconv", "pointnet"))
    check_choice("task", task, ("cls", "partseg"))
    if task == "partseg" and (num_categories is None or category_parts is None):
        raise ConfigError("num_categories", num_categories, "the categories and their parts (from the data)")
    if arch == "pointnet":
        model = PointNet(num_classes, num_points, task, num_categories, **dict(pointnet or {}))
    elif task == "partseg":
        model = RISurConvPartSeg(num_classes, num_categories, num_points, **dict(risurconv_partseg or {}))
    else:
        model = RISurConvClassifier(num_classes, num_points, **dict(risurconv or {}))
    n = num_categories if task == "partseg" else num_classes
    model.class_names = list(class_names) if class_names else [str(i) for i in range(n)]
    model.category_parts = [list(p) for p in category_parts] if category_parts else None
    return model
