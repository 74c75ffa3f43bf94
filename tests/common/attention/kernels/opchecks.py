"""`torch.library.opcheck` for the kernels' custom ops, sized for the lane it runs in."""

from __future__ import annotations

import torch

# Under the CPU interpreter the aot_dispatch pass reruns the kernels several times while tracing (~10 s per op);
# the compiled-graph tests trace the same way, so the CPU lane checks schema, fake tensors and autograd only.
CPU_UTILS = ("test_schema", "test_faketensor", "test_autograd_registration")
GPU_UTILS = (*CPU_UTILS, "test_aot_dispatch_dynamic")


def opcheck(op, args) -> None:
    torch.library.opcheck(op, args, test_utils=GPU_UTILS if torch.cuda.is_available() else CPU_UTILS)
