"""The one place the kernel tests' tolerances live, per dtype, and the comparison that uses them.

A kernel output or gradient `out` matches the reference `ref` (computed in float32 or float64 from the same inputs) when
its relative RMS error, ||out - ref|| / ||ref||, is at most `rel_rms` and no element is further than
`atol * rms(ref) + rtol * |ref|` away: atol is in units of the tensor's RMS, so a location gradient in the
hundreds (deformable attention on a 150-pixel-wide map) is judged like an output of order one.
bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.004), so a sum of many
rounded products lands around 1e-2; fp32 kernels differ from the reference only in summation order.
"""

from __future__ import annotations

import torch

TOLERANCES = {
    torch.float32: dict(rel_rms=1e-4, atol=1e-4, rtol=1e-3),
    torch.float16: dict(rel_rms=5e-3, atol=5e-3, rtol=5e-2),
    torch.bfloat16: dict(rel_rms=2e-2, atol=2e-2, rtol=1e-1),
}


def assert_close(
    name: str, ref: torch.Tensor, out: torch.Tensor, dtype: torch.dtype, same_dtype_ref: torch.Tensor | None = None
) -> None:
    """Compare `out` (the kernel's) with `ref` (the reference's) under the tolerance of `dtype`.

    `same_dtype_ref`, the torch reference run in `dtype` itself, widens the elementwise bound to twice its own
    worst error where that is larger (FlashAttention's test rule): a bf16 gradient with cancellation (a small
    element summed from large terms) can miss atol*rms + rtol*|ref| in the reference's own bf16 run too, and
    a kernel is not asked to beat its dtype. The relative RMS bound is never widened.
    """
    tol = TOLERANCES[dtype]
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    ref, out = ref.detach().double(), out.detach().double()
    assert torch.isfinite(out).all(), f"{name}: non-finite values (a read of unwritten memory?)"
    scale = ref.pow(2).mean().sqrt().clamp_min(1e-12)
    rel_rms = ((out - ref).norm() / ref.norm().clamp_min(1e-12)).item()
    bound = tol["atol"] * scale + tol["rtol"] * ref.abs()
    if same_dtype_ref is not None:
        bound = bound.clamp_min(2 * (same_dtype_ref.detach().double() - ref).abs().max())
    worst = ((out - ref).abs() - bound).max().item()
    assert rel_rms <= tol["rel_rms"], f"{name}: relative RMS error {rel_rms:.2e} > {tol['rel_rms']:.0e} ({dtype})"
    assert worst <= 0, (
        f"{name}: an element is {worst:.2e} beyond atol*rms(ref) + rtol*|ref|"
        + (" and twice the same-dtype reference's worst error" if same_dtype_ref is not None else "")
        + f" ({dtype})"
    )
