"""Register a user's volume with a NestedMorph (or VoxelMorph) export.

`input` is
- a moving NIfTI volume with `fixed=<fixed NIfTI volume>` (`make predict app=nestedmorph input=moving.nii.gz
  ARGS="fixed=fixed.nii.gz"`): two volumes of one shape, resized to the model's cube as the real datasets are
  (`common.medical.reg_pairs`); results are written on that cube (the fixed image's affine rescaled to it);
- a pair folder: `moving.nii.gz` and `fixed.nii.gz` of one shape (optional `moving_labels.nii.gz`, warped
  along), read the same way; or
- one NIfTI volume in MNI space without `fixed` (e.g. affinely normalised): registered onto the MNI152 template,
  both resampled onto the embedded data's MNI cube grid through their affines.

Writes `warped.nii.gz`, `ddf.nii.gz` (displacement [S, S, S, 3] in mm along the grid's axes, which are RAS),
`fixed.nii.gz` (the fixed image on the cube), `warped_labels.nii.gz` when labels came with the pair, and
`registration.png` (fixed / moving / warped / differences / warped grid / Jacobian), plus `registration.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from common.errors import InputError
from common.medical.brains import load_brain
from common.medical.jacobian import folding_percent, jacobian_determinant, sdlogj
from common.medical.reg_pairs import read_pair, read_volumes
from common.medical.reg_plots import plot_registration
from common.medical.volumes import EXPECTED, is_nifti, load_volume, save_volume
from common.medical.warp import cube_grid, resample, resized_affine, warp_labels

ACCEPTS = f"a pair folder with moving.nii.gz and fixed.nii.gz, or {EXPECTED} in MNI space"
ACCEPTS_FIXED = f"input=<moving: {EXPECTED}> with fixed=<{EXPECTED} of the same shape>"


def _to_mni_cube(input_path: Path, size: int) -> dict:
    """The user's volume and the MNI152 template on the MNI cube grid of the embedded data."""
    image, affine = load_volume(input_path)  # the user's file first: its errors come before any work
    mni = load_brain("mni152")
    grid = cube_grid(mni.image, mni.affine, size)
    moving = resample(image, affine, grid, size)
    if moving.max() <= moving.min():
        raise InputError(
            input_path, ACCEPTS, problem="the volume does not overlap the MNI152 brain's box (not in MNI space?)"
        )
    moving = (moving - moving.min()) / (moving.max() - moving.min())
    fixed = resample(mni.image, mni.affine, grid, size)
    return {"moving": torch.from_numpy(moving)[None], "fixed": torch.from_numpy(fixed)[None], "affine": grid}


def _read_input(input_path: Path, size: int, fixed: str | None) -> dict:
    if fixed is not None:
        if input_path.is_dir():
            raise InputError(input_path, ACCEPTS_FIXED, problem="fixed= goes with a moving volume, not a pair folder")
        pair = read_volumes({"moving": input_path, "fixed": Path(fixed)}, size, expected=ACCEPTS_FIXED)
    elif input_path.is_dir():
        pair = read_pair(input_path, size)
    elif is_nifti(input_path):
        return _to_mni_cube(input_path, size)
    else:
        raise InputError(input_path, ACCEPTS, problem="neither a folder nor a NIfTI file")
    return pair | {"affine": resized_affine(pair["affine"], pair["shape"], size)}


@torch.no_grad()
def predict(model, input_path: Path, out_dir: Path, spec: dict, fixed: str | None = None) -> dict:
    """`fixed`: the fixed volume that `input_path` (the moving one) is registered onto (see the module docstring)."""
    input_path, out_dir = Path(input_path), Path(out_dir)
    size = int(spec["spec"]["size"])
    data = _read_input(input_path, size, fixed)
    moving, fixed = data["moving"][None].float(), data["fixed"][None].float()
    warped, ddf = model(moving, fixed)
    affine = data["affine"]
    spacing = np.abs(affine[:3, :3]).sum(axis=0)  # mm per voxel along each grid axis
    det = jacobian_determinant(ddf)
    written = {
        "warped": save_volume(out_dir / "warped.nii.gz", warped[0, 0].numpy(), affine),
        "fixed": save_volume(out_dir / "fixed.nii.gz", fixed[0, 0].numpy(), affine),
        "ddf": save_volume(out_dir / "ddf.nii.gz", ddf[0].permute(1, 2, 3, 0).numpy() * spacing, affine),
    }
    if "moving_labels" in data:
        labels = warp_labels(data["moving_labels"][None], ddf)[0, 0]
        written["warped_labels"] = save_volume(
            out_dir / "warped_labels.nii.gz", labels.numpy().astype(np.int16), affine
        )
    volumes = [t[0, 0].numpy() for t in (fixed, moving, warped)]
    written["picture"] = plot_registration(
        *volumes, ddf[0].numpy(), det[0].numpy(), out_dir / "registration.png", title=f"{input_path.name}"
    )
    summary = {
        "input": str(input_path),
        "size": size,
        "sdlogj": float(sdlogj(det)[0]),
        "folding_percent": float(folding_percent(det)[0]),
        "max_displacement_mm": float(
            (ddf[0].permute(1, 2, 3, 0) * torch.from_numpy(spacing).float()).norm(dim=-1).max()
        ),
    }
    written["summary"] = out_dir / "registration.json"
    written["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    print(f"registered {input_path.name}: SDlogJ {summary['sdlogj']:.3f}, folded {summary['folding_percent']:.2f} %")
    return {k: str(v) for k, v in written.items()}
