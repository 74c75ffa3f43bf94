"""Fused bi-level routing attention kernel vs the gather reference: output and grads of q, k, v.

CPU: the Triton interpreter at small sizes (the kernels' bf16 tl.dot runs upcast there, see `_dot`).
GPU (`-m gpu`): the same grid compiled, plus BiFormer-T's stage shapes at 224px.
"""

from __future__ import annotations

import pytest
import torch

from common.attention.routing_bilevel import (
    BiLevelRoutingAttention,
    bilevel_routing_attention,
    bilevel_routing_attention_torch,
)
from common.errors import ConfigError
from tests.common.attention.kernels.opchecks import opcheck
from tests.common.attention.kernels.tolerances import assert_close

pytest.importorskip("triton")
gpu = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16


def _case(batch, hw, cqk, cv, heads, n_win, topk, dtype, marks=()):
    tag = {F32: "f32", BF16: "bf16", F16: "f16"}[dtype]
    ident = f"B{batch}-{hw[0]}x{hw[1]}-S{n_win}-k{topk}-H{heads}-Dqk{cqk // heads}-Dv{cv // heads}-{tag}"
    return pytest.param(batch, hw, cqk, cv, heads, n_win, topk, dtype, id=ident, marks=marks)


SMALL = [
    _case(2, (8, 8), 16, 16, 1, 2, 1, F32),  # 16-pixel regions, one routed region
    _case(2, (8, 8), 48, 32, 2, 4, 2, F32),  # 4-pixel regions packed into one key tile; head dim 24 != 16
    _case(1, (8, 8), 32, 32, 2, 4, 16, F32),  # topk = all regions
    _case(2, (7, 9), 32, 48, 2, 2, 2, F32),  # padded to 8 x 10: 20-pixel regions, masked keys and queries
    _case(1, (7, 9), 24, 16, 1, 2, 4, F32),  # padded, topk = all
    _case(1, (5, 5), 32, 32, 2, 4, 16, F32),  # padded to 8 x 8: a row and a column of all-padding regions
    _case(1, (3, 3), 16, 16, 1, 4, 9, F32),  # map smaller than n_win: 1-pixel regions, 7 of them padding
    _case(1, (16, 16), 16, 32, 1, 1, 1, F32),  # one 256-pixel region: several query blocks and key tiles
    _case(2, (8, 8), 48, 32, 2, 4, 2, BF16),
    _case(2, (7, 9), 32, 48, 2, 2, 3, BF16),
    _case(1, (8, 8), 32, 32, 2, 2, 2, F16),
]
# BiFormer-T at 224px (qk_dim = C, head dim 32), at batch 2, and a padded segmentation-like map
STAGES = [
    _case(2, (56, 56), 64, 64, 2, 7, 1, BF16, gpu),
    _case(2, (28, 28), 128, 128, 4, 7, 4, BF16, gpu),
    _case(2, (14, 14), 256, 256, 8, 7, 16, BF16, gpu),
    _case(2, (14, 14), 256, 256, 8, 7, 16, F32, gpu),
    _case(2, (28, 28), 128, 128, 4, 7, 4, F16, gpu),
    _case(2, (60, 50), 64, 64, 2, 8, 4, BF16, gpu),  # padded to 64 x 56
]


def _inputs(batch, hw, cqk, cv, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, *hw, cqk, generator=g).to(device, dtype) for _ in range(2))
    v = torch.randn(batch, *hw, cv, generator=g).to(device, dtype)
    do = torch.randn(batch, *hw, cv, generator=g).to(device, dtype)
    return q, k, v, do


def _run(fn, q, k, v, do):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v)
    out.backward(do)
    return out, q.grad, k.grad, v.grad


@pytest.mark.parametrize("batch, hw, cqk, cv, heads, n_win, topk, dtype", SMALL + STAGES)
def test_kernel_matches_reference(batch, hw, cqk, cv, heads, n_win, topk, dtype, device):
    q, k, v, do = _inputs(batch, hw, cqk, cv, dtype, device)
    reference = lambda *t: bilevel_routing_attention_torch(*t, heads, n_win, topk)  # noqa: E731
    ref = _run(reference, *(t.float() for t in (q, k, v, do)))
    same_dtype = _run(reference, q, k, v, do) if dtype != F32 else (None,) * 4
    ours = _run(lambda *t: bilevel_routing_attention(*t, heads, n_win, topk, impl="triton"), q, k, v, do)
    for name, r, o, s in zip(("out", "dq", "dk", "dv"), ref, ours, same_dtype):
        assert o.dtype == dtype
        assert_close(name, r, o, dtype, same_dtype_ref=s)


def test_module_triton_matches_torch_on_qkv_slices(device):
    """Through the module: q, k, v are column slices of one projection (strided maps, no copy)."""
    torch.manual_seed(0)
    module = BiLevelRoutingAttention(32, 2, n_win=3, topk=2, qk_dim=48).to(device)
    x = torch.randn(2, 7 * 8, 32, device=device)
    grads = {}
    for impl in ("torch", "triton"):
        module.impl = impl
        module.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = module(xi, hw=(7, 8))
        out.backward(torch.ones_like(out))
        grads[impl] = (out, xi.grad, module.qkv.weight.grad)
    for name, r, o in zip(("out", "dx", "dW_qkv"), grads["torch"], grads["triton"]):
        assert_close(name, r, o, F32)


def test_explicit_scale(device):
    q, k, v, do = _inputs(1, (8, 8), 32, 16, F32, device)
    ref = _run(lambda *t: bilevel_routing_attention_torch(*t, 2, 2, 2, scale=0.3), q, k, v, do)
    ours = _run(lambda *t: bilevel_routing_attention(*t, 2, 2, 2, scale=0.3, impl="triton"), q, k, v, do)
    for name, r, o in zip(("out", "dq", "dk", "dv"), ref, ours):
        assert_close(name, r, o, F32)


def test_auto_picks_torch_on_cpu_and_triton_needs_interpreter(monkeypatch):
    from common.attention.dispatch import resolve_impl

    q, k, v, _ = _inputs(1, (4, 4), 8, 8, F32, "cpu")
    assert resolve_impl("routing_bilevel", "auto", q, k, v) == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ConfigError):
        bilevel_routing_attention(q, k, v, 2, 2, 1, impl="triton")
    with pytest.raises(ConfigError):
        BiLevelRoutingAttention(8, 2, n_win=2, topk=1, impl="cuda")


@pytest.mark.parametrize(
    "shapes, heads, n_win, topk",
    [
        pytest.param(((1, 4, 4, 8), (1, 4, 4, 8), (1, 4, 5, 8)), 2, 2, 1, id="v-map-mismatch"),
        pytest.param(((1, 4, 4, 8), (1, 4, 4, 6), (1, 4, 4, 8)), 2, 2, 1, id="k-width-mismatch"),
        pytest.param(((1, 4, 4, 8), (1, 4, 4, 8), (1, 4, 4, 6)), 4, 2, 1, id="heads-not-divisor"),
        pytest.param(((1, 4, 4, 8), (1, 4, 4, 8), (1, 4, 4, 8)), 2, 2, 5, id="topk-too-large"),
        pytest.param(((4, 4, 8), (4, 4, 8), (4, 4, 8)), 2, 2, 1, id="not-4d"),
    ],
)
def test_input_checks(shapes, heads, n_win, topk, device):
    from common.attention.routing_bilevel.triton import bilevel_routing_attention_triton

    q, k, v = (torch.randn(s, device=device) for s in shapes)
    with pytest.raises(ValueError):
        bilevel_routing_attention_triton(q, k, v, heads, n_win, topk)


def test_dtype_check(device):
    from common.attention.routing_bilevel.triton import bilevel_routing_attention_triton

    q = torch.randn(1, 4, 4, 8, device=device)
    with pytest.raises(ValueError, match="dtype"):
        bilevel_routing_attention_triton(q, q, q.double(), 2, 2, 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_picks_triton_on_cuda():
    from common.attention.dispatch import resolve_impl

    q = torch.randn(1, 4, 4, 8, device="cuda")
    assert resolve_impl("routing_bilevel", "auto", q, q, q) == "triton"


def test_ops_pass_opcheck(device):
    """The custom ops' schemas, fake (meta) implementations and registered autograd agree with the kernels."""
    import common.attention.routing_bilevel.triton  # noqa: F401  (registers the ops)
    from common.attention.routing_bilevel.reference import route_regions

    q, k, v, do = _inputs(2, (7, 9), 32, 48, F32, device)
    route = route_regions(q, k, 2, 2, 32**-0.5, fp32=True)
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), route, 2, 2, 32**-0.5)
    opcheck(torch.ops.manyheads.routing_bilevel_forward.default, args)
    o, lse = torch.ops.manyheads.routing_bilevel_forward(*(t.detach() if torch.is_tensor(t) else t for t in args))
    backward_args = (do, q.detach(), k.detach(), v.detach(), o, lse, route, 2, 2, 32**-0.5)
    opcheck(torch.ops.manyheads.routing_bilevel_backward.default, backward_args)


def test_module_compiles_as_one_graph(device):
    """torch.compile(fullgraph=True) captures the module, routing and kernels included, and matches eager in the
    forward and the backward. On the CPU the aot_eager backend traces the same graph (inductor's CPU code
    generation is not what is tested here)."""
    torch.manual_seed(0)
    module = BiLevelRoutingAttention(32, 2, n_win=2, topk=2, impl="triton").to(device)
    x = torch.randn(2, 8 * 8, 32, device=device, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
    results = []
    for fn in (module, compiled):
        out = fn(x, hw=(8, 8))
        results.append((out, torch.autograd.grad(out.square().sum(), x)[0]))
    for name, eager, graph in zip(("out", "grad_x"), *results):
        torch.testing.assert_close(graph, eager, rtol=1e-5, atol=1e-5, msg=name)  # fp32, same kernels: fusion only
