"""Where the host's time goes in one call of the fused bi-level routing attention (BiFormer-T stage 1, B64, bf16).

    python -m benchmarks.routing_host          # CUDA only

At BiFormer's batch-64 shapes the kernels take ~0.25 ms of GPU time per forward+backward while the host needs
~0.9 ms to issue them, so `do_bench` times the host (benchmarks/README.md). This prints the host microseconds
per call of each piece (mean over 300 calls after 20 warm-up calls, timed before the final synchronize): the
dispatch, input checks, routing, one kernel launch, the public op's forward under no_grad and in grad mode,
and its forward+backward; then forward+backward with the kernels through the custom ops (what compiled code
calls) against the eager path that calls the same functions directly.
"""

from __future__ import annotations

import json
import time

import torch

import common.attention.routing_bilevel.triton as fused
from benchmarks.routing_bench import STAGES
from common.attention.dispatch import resolve_impl
from common.attention.routing_bilevel import bilevel_routing_attention, route_regions

BATCH = 64


def host_us(fn, calls: int = 300) -> float:
    """Host microseconds per call (the GPU may still be busy when the clock stops)."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return round(elapsed / calls * 1e6, 1)


def main() -> dict | None:
    if not torch.cuda.is_available():
        print("routing_host: skipped, needs CUDA")
        return None
    height, width, channels, heads, n_win, topk = STAGES["stage1"]
    g = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(BATCH, height, width, channels, generator=g).cuda().bfloat16() for _ in range(4))
    scale = channels**-0.5
    rh, rw = height // n_win, width // n_win
    route = route_regions(q, k, n_win, topk, scale, fp32=True)
    cfg = fused._config(n_win, rh, rw, topk, channels // heads, channels // heads, q.dtype)
    o, lse = torch.empty_like(q), torch.empty(BATCH, heads, height, width, device=q.device)

    def launch():
        fused.launch_forward(q, k, v, o, lse, route, heads, scale, cfg)

    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]

    def forward_grad_mode():
        for t in leaves:
            t.grad = None
        return bilevel_routing_attention(*leaves, heads, n_win, topk)

    def forward_backward():
        forward_grad_mode().backward(do)

    def forward_backward_kernels(dispatcher: bool):
        """True: the kernels through the custom ops, as compiled code calls them; False: the eager path, which
        calls the same functions directly."""
        for t in leaves:
            t.grad = None
        route = route_regions(*leaves[:2], n_win, topk, scale, fp32=True)
        fused.routed_attention(*leaves, route, heads, n_win, scale, dispatcher=dispatcher)[0].backward(do)

    rows = {
        "resolve_impl": host_us(lambda: resolve_impl("routing_bilevel", "auto", q, k, v)),
        "_check": host_us(lambda: fused._check(q, k, v, heads, n_win, topk)),
        "route_regions": host_us(lambda: route_regions(q, k, n_win, topk, scale, fp32=True)),
        "one kernel launch (fwd)": host_us(launch),
    }
    with torch.no_grad():
        rows["forward, no_grad"] = host_us(lambda: bilevel_routing_attention(q, k, v, heads, n_win, topk))
    rows["forward, grad mode"] = host_us(forward_grad_mode)
    rows["forward+backward"] = host_us(forward_backward)
    rows["forward+backward, kernels through the custom ops"] = host_us(lambda: forward_backward_kernels(True))
    rows["forward+backward, kernels called directly"] = host_us(lambda: forward_backward_kernels(False))
    print(json.dumps({"device": torch.cuda.get_device_name(), "stage": "stage1", "batch": BATCH, "host_us": rows}))
    return rows


if __name__ == "__main__":
    main()
