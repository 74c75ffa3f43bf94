"""A call's GPU busy time: the sum of its kernels' durations, without the host's launch cost.

`triton.testing.do_bench` records CUDA events around each call, so once a call is shorter on the GPU than on
the host (Python, autograd, kernel launches: ~0.5-1.3 ms for a fused attention op's forward+backward on the
H200 machine) it times the host. The kernels' own durations (torch.profiler, CUDA activity) are what the
op costs the GPU; in a training step the host runs ahead of the GPU, so that is its cost there as long as
the step as a whole is not host-bound. (Not `do_bench_cudagraph`: the deformable reference syncs with the
host, which a CUDA graph cannot capture, and the profiler clock serves every provider alike.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


def gpu_busy_ms(fn: Callable[[], object], leaves: Sequence[torch.Tensor] = (), calls: int = 10) -> float:
    """Mean over `calls` calls of the summed durations of the CUDA kernels (and memsets/copies) one call
    launches; leaf grads are set to None before each call. Call `fn` a few times first (compilation)."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            for t in leaves:
                t.grad = None
            fn()
        torch.cuda.synchronize()
    total_us = sum(e.device_time_total for e in prof.key_averages() if e.device_type == DeviceType.CUDA)
    for t in leaves:
        t.grad = None
    return total_us / 1e3 / calls


def cuda_graphed(op: Callable, graph_args: Sequence[int]) -> Callable:
    """`op(*args)` captured as CUDA graphs, forward and backward (`torch.cuda.make_graphed_callables`), over the
    tensors at positions `graph_args`; the other arguments are baked into the graph of the first call with their
    shapes. A replay skips Python and the kernel launches, not the autograd engine. One shape at a time (the
    graphs' memory pool is freed when the next shape is captured)."""
    captured = {}

    def run(*args):
        key = tuple((tuple(a.shape), a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args)
        if key not in captured:
            captured.clear()
            fixed = list(args)

            def call(*tensors):
                for i, t in zip(graph_args, tensors):
                    fixed[i] = t
                return op(*fixed)

            with torch.enable_grad():  # the capture differentiates the op even when first called under no_grad
                captured[key] = torch.cuda.make_graphed_callables(call, tuple(args[i] for i in graph_args))
        return captured[key](*(args[i] for i in graph_args))

    return run
