"""Which implementation runs a functional op: the Triton kernel or the torch reference.

Every op with a kernel takes `impl="auto" | "torch" | "triton"`:
- "auto" picks Triton when every tensor is on CUDA and triton imports, else the torch reference. A missing
  or broken Triton install never disables the reference (detrex's mistake, style-anchors §4).
- "torch" forces the reference.
- "triton" forces the kernel and raises a ConfigError when it cannot run: triton is not installed, or the
  tensors are on the CPU outside the Triton interpreter (`TRITON_INTERPRET=1`, the CPU test lane).
`MANYHEADS_ATTN_IMPL=torch` in the environment turns "auto" into "torch" everywhere (a global kill switch).
"""

from __future__ import annotations

import importlib.util
import os

import torch

from common.errors import ConfigError, check_choice

IMPLS = ("auto", "torch", "triton")
ENV_SWITCH = "MANYHEADS_ATTN_IMPL"


_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None  # once, at import (compiled graphs trace the call)


def triton_installed() -> bool:
    return _TRITON_INSTALLED


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (slow; for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_impl(op: str, impl: str, *tensors: torch.Tensor | None) -> str:
    """Return "torch" or "triton" for a call of `op` on `tensors` (None entries are ignored)."""
    check_choice("impl", impl, IMPLS)
    on_cuda = all(t.is_cuda for t in tensors if t is not None)
    if impl == "auto":
        forced = os.environ.get(ENV_SWITCH, "auto")
        check_choice(ENV_SWITCH, forced, IMPLS)
        impl = forced if forced != "auto" else ("triton" if on_cuda and triton_installed() else "torch")
    if impl == "triton":
        if not triton_installed():
            raise ConfigError("impl", impl, f"an installed triton for {op} (pip install triton), or impl=torch")
        if not (on_cuda or interpreting()):
            raise ConfigError(
                "impl", impl, f"CUDA tensors for the {op} kernel (or TRITON_INTERPRET=1 on the CPU), or impl=torch"
            )
    return impl
