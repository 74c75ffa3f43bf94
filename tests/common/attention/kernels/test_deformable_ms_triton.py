"""Triton multi-scale deformable attention vs the grid_sample reference: output and the grads of value,
sampling locations and attention weights, plus dispatch and input checks.

CPU: the kernels run under the Triton interpreter at small sizes (the default lane). CUDA: the same cases
compiled, and the `gpu`-marked Deformable-DETR encoder/decoder shapes (`pytest -m gpu`).
The reference runs in float64 on the kernel's own (rounded) inputs, so only the kernel's error is measured.
"""

from __future__ import annotations

import pytest
import torch

from common.attention.deformable_ms import MultiScaleDeformableAttention, deformable_ms, deformable_ms_torch
from common.attention.deformable_ms.triton import deformable_ms_triton
from common.attention.dispatch import resolve_impl
from common.errors import ConfigError
from tests.common.attention.kernels.opchecks import opcheck
from tests.common.attention.kernels.tolerances import assert_close

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
DTYPE_IDS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def levels_of(shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    spatial = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial.prod(1)
    return spatial, torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def make_inputs(batch, queries, heads, head_dim, shapes, points, dtype, device, seed=0):
    """Values, locations (about a quarter outside [0, 1], some exactly on the borders 0 and 1, some on
    pixel centres of power-of-two-sized maps) and softmaxed weights, rounded to `dtype`.

    Random locations are nudged off pixel centres (integer sample coordinates), where the location grad is
    one-sided and a last-bit difference between two float computations would flip the side.
    """
    g = torch.Generator().manual_seed(seed)
    spatial, starts = levels_of(shapes)
    levels = len(shapes)
    value = torch.randn(batch, int(spatial.prod(1).sum()), heads, head_dim, generator=g, dtype=torch.float64)
    loc = torch.rand(batch, queries, heads, levels, points, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    size = spatial.flip(1).double().view(levels, 1, 2)  # (W, H) per level
    coord = loc * size - 0.5
    near = (coord - coord.round()).abs() < 1e-3
    loc = torch.where(near, loc + 3e-3 / size, loc)
    flat = loc.view(-1, levels, points, 2)
    flat[0::7, :, 0, 0] = 0.0  # left border
    flat[1::7, :, 0, 1] = 1.0  # bottom border
    flat[2::7, :, -1] = 1.0  # bottom-right corner
    for level, (h, w) in enumerate(shapes):
        if (h & (h - 1)) == 0 and (w & (w - 1)) == 0:  # exact in every float format: both sides agree
            flat[3::7, level, 0] = torch.tensor([(w // 2 + 0.5) / w, (h // 2 + 0.5) / h], dtype=torch.float64)
    logits = torch.randn(batch, queries, heads, levels * points, generator=g, dtype=torch.float64)
    weights = logits.softmax(-1).view(batch, queries, heads, levels, points)
    grad_out = torch.randn(batch, queries, heads * head_dim, generator=g, dtype=torch.float64)
    cast = [t.to(device=device, dtype=dtype) for t in (value, loc, weights, grad_out)]
    return (*cast, spatial.to(device), starts.to(device))


def check_against_reference(batch, queries, heads, head_dim, shapes, points, dtype, device):
    value, loc, weights, grad_out, spatial, starts = make_inputs(
        batch, queries, heads, head_dim, shapes, points, dtype, device
    )
    ours_in = [t.clone().requires_grad_(True) for t in (value, loc, weights)]
    ref_in = [t.double().requires_grad_(True) for t in (value, loc, weights)]
    out = deformable_ms(ours_in[0], spatial, starts, ours_in[1], ours_in[2], impl="triton")
    ref = deformable_ms_torch(ref_in[0], spatial, starts, ref_in[1], ref_in[2])
    assert out.dtype == dtype
    assert_close("out", ref, out, dtype)
    out.backward(grad_out)
    ref.backward(grad_out.double())
    for name, ours, theirs in zip(("grad_value", "grad_locations", "grad_weights"), ours_in, ref_in):
        assert ours.grad.dtype == dtype
        assert_close(name, theirs.grad, ours.grad, dtype)


def case(batch, queries, heads, head_dim, shapes, points, dtype):
    levels = "x".join(f"{h}.{w}" for h, w in shapes)
    name = f"B{batch}-Q{queries}-H{heads}-D{head_dim}-L{len(shapes)}[{levels}]-P{points}-{DTYPE_IDS[dtype]}"
    return pytest.param(batch, queries, heads, head_dim, shapes, points, dtype, id=name)


ODD = [(7, 5), (3, 1)]
FOUR = [(8, 8), (4, 6), (2, 3), (1, 1)]
SMALL_CASES = [
    case(1, 5, 1, 32, [(4, 4)], 1, torch.float32),
    case(2, 9, 3, 24, ODD, 3, torch.float32),
    case(2, 7, 3, 8, FOUR, 4, torch.float32),
    case(1, 6, 1, 32, FOUR, 3, torch.float32),
    case(1, 130, 1, 8, [(5, 6)], 1, torch.float32),  # two query blocks, the second partly masked
    case(2, 9, 3, 24, ODD, 3, torch.bfloat16),
    case(1, 7, 1, 32, FOUR, 4, torch.bfloat16),
    case(1, 5, 3, 8, [(4, 4)], 1, torch.bfloat16),
    case(1, 6, 3, 24, ODD, 4, torch.float16),
]


@pytest.mark.parametrize("batch,queries,heads,head_dim,shapes,points,dtype", SMALL_CASES)
def test_kernel_matches_reference(batch, queries, heads, head_dim, shapes, points, dtype, device):
    check_against_reference(batch, queries, heads, head_dim, shapes, points, dtype, device)


ENCODER_LEVELS = [(100, 150), (50, 75), (25, 38), (13, 19)]  # Deformable-DETR, 19947 tokens


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("queries", [19947, 900], ids=["encoder-Qall", "decoder-Q900"])
def test_kernel_matches_reference_detr_shapes(queries, dtype):
    check_against_reference(2, queries, 8, 32, ENCODER_LEVELS, 4, dtype, "cuda")


def test_ops_pass_opcheck(device):
    """The custom ops' schemas, fake (meta) implementations and registered autograd agree with the kernels."""
    value, loc, weights, grad_out, spatial, starts = make_inputs(1, 6, 2, 8, ODD, 2, torch.float32, device)
    shapes32, starts32 = spatial.to(torch.int32), starts.to(torch.int32)
    forward_args = (value.requires_grad_(), shapes32, starts32, loc.requires_grad_(), weights.requires_grad_())
    opcheck(torch.ops.manyheads.deformable_ms_forward.default, forward_args)
    for need_value in (True, False):
        backward_args = (grad_out, *(t.detach() for t in forward_args), need_value)
        opcheck(torch.ops.manyheads.deformable_ms_backward.default, backward_args)


def test_module_compiles_as_one_graph(device):
    """torch.compile(fullgraph=True) captures the whole module, kernel included (it graph-broke at the level-size
    check before the kernels were custom ops), and the compiled forward and backward match eager. On the CPU the
    aot_eager backend traces the same graph (inductor's CPU code generation is not what is tested here)."""
    torch.manual_seed(0)
    module = MultiScaleDeformableAttention(64, 4, num_levels=2, num_points=2, impl="triton").to(device)
    spatial, starts = levels_of([(6, 7), (3, 4)])
    spatial, starts = spatial.to(device), starts.to(device)
    query = torch.randn(2, 10, 64, device=device, requires_grad=True)
    value = torch.randn(2, 54, 64, device=device, requires_grad=True)
    ref_points = torch.rand(2, 10, 2, 2, device=device)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="inductor" if CUDA else "aot_eager")
    results = []
    for fn in (module, compiled):
        out = fn(query, ref_points, value, spatial, starts)
        results.append((out, *torch.autograd.grad(out.square().sum(), (query, value))))
    for name, eager, graph in zip(("out", "grad_query", "grad_value"), *results):
        torch.testing.assert_close(graph, eager, rtol=1e-5, atol=1e-5, msg=name)  # fp32, same kernels: fusion only


def test_module_triton_matches_torch(device):
    torch.manual_seed(0)
    module = MultiScaleDeformableAttention(16, 2, num_levels=2, num_points=2).to(device)
    with torch.no_grad():
        module.sampling_offsets.weight.normal_(0, 0.3)
        module.attention_weights.weight.normal_(0, 0.3)
    spatial, starts = levels_of(ODD)
    spatial, starts = spatial.to(device), starts.to(device)
    query = torch.randn(2, 5, 16, device=device, requires_grad=True)
    value = torch.randn(2, 38, 16, device=device, requires_grad=True)
    ref_points = torch.rand(2, 5, 2, 2, device=device)
    results = {}
    for impl in ("torch", "triton"):
        module.impl = impl
        out = module(query, ref_points, value, spatial, starts)
        grads = torch.autograd.grad(out.square().sum(), (query, value))
        results[impl] = (out, *grads)
    for name, ref, ours in zip(("out", "grad_query", "grad_value"), results["torch"], results["triton"]):
        assert_close(name, ref, ours, torch.float32)


def test_auto_picks_torch_for_cpu_tensors_and_triton_without_interpreter_is_a_config_error(monkeypatch):
    value, loc, weights, _, spatial, starts = make_inputs(1, 3, 1, 4, [(2, 2)], 1, torch.float32, "cpu")
    assert resolve_impl("deformable_ms", "auto", value, loc, weights) == "torch"
    ref = deformable_ms_torch(value, spatial, starts, loc, weights)
    assert torch.equal(deformable_ms(value, spatial, starts, loc, weights, impl="auto"), ref)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ConfigError, match="CUDA tensors"):
        deformable_ms(value, spatial, starts, loc, weights, impl="triton")


def test_float64_stays_on_the_reference_under_auto_and_is_refused_by_the_kernel(device, monkeypatch):
    value, loc, weights, _, spatial, starts = make_inputs(1, 3, 1, 4, [(2, 2)], 1, torch.float64, device)
    monkeypatch.setattr("common.attention.deformable_ms.module.resolve_impl", lambda *args: "triton")
    torch.testing.assert_close(
        deformable_ms(value, spatial, starts, loc, weights), deformable_ms_torch(value, spatial, starts, loc, weights)
    )
    with pytest.raises(ValueError, match="float64"):
        deformable_ms(value, spatial, starts, loc, weights, impl="triton")


@pytest.mark.parametrize(
    "break_it,message",
    [
        pytest.param(lambda v, s, st, x, w: (v[:, :-1], s, st, x, w), "sum to", id="too-few-tokens"),
        pytest.param(lambda v, s, st, x, w: (v, s, st + 1, x, w), "running sum", id="bad-level-starts"),
        pytest.param(lambda v, s, st, x, w: (v, s[:1], st, x, w), "spatial_shapes must be", id="too-few-levels"),
        pytest.param(
            lambda v, s, st, x, w: (v, s, st, x.double(), w), "locations in torch.float64", id="fp64-locations"
        ),
        pytest.param(lambda v, s, st, x, w: (v, s.float(), st, x, w), "integer", id="float-spatial-shapes"),
        pytest.param(lambda v, s, st, x, w: (v, s, st, x, w[..., :1]), "attention_weights", id="weights-shape"),
        pytest.param(lambda v, s, st, x, w: (v, s, st, x[:, :, :1], w), "do not match", id="heads-mismatch"),
    ],
)
def test_inconsistent_inputs_raise_clear_errors(break_it, message, device):
    value, loc, weights, _, spatial, starts = make_inputs(1, 3, 2, 4, ODD, 2, torch.float32, device)
    with pytest.raises(ValueError, match=message):
        deformable_ms(*break_it(value, spatial, starts, loc, weights), impl="triton")


def test_mixed_dtypes_as_under_autocast(device):
    """bf16 values with fp32 locations and weights (what autocast hands over): grads keep each input's dtype."""
    value, loc, weights, grad_out, spatial, starts = make_inputs(2, 6, 3, 24, ODD, 3, torch.float32, device)
    value = value.bfloat16().requires_grad_(True)
    loc, weights = loc.clone().requires_grad_(True), weights.clone().requires_grad_(True)
    ref_in = [t.detach().double().requires_grad_(True) for t in (value, loc, weights)]
    out = deformable_ms(value, spatial, starts, loc, weights, impl="triton")
    ref = deformable_ms_torch(ref_in[0], spatial, starts, ref_in[1], ref_in[2])
    assert out.dtype == torch.bfloat16
    assert_close("out", ref, out, torch.bfloat16)
    out.backward(grad_out.bfloat16())
    ref.backward(grad_out.double().bfloat16().double())
    assert (value.grad.dtype, loc.grad.dtype, weights.grad.dtype) == (torch.bfloat16, torch.float32, torch.float32)
    for name, ours, theirs in zip(("grad_value", "grad_locations", "grad_weights"), (value, loc, weights), ref_in):
        assert_close(name, theirs.grad, ours.grad, torch.bfloat16)


def test_level_check_is_remembered_until_the_level_tensors_change(device):
    value, loc, weights, _, spatial, starts = make_inputs(1, 3, 2, 4, ODD, 2, torch.float32, device)
    first = deformable_ms(value, spatial, starts, loc, weights, impl="triton")
    torch.testing.assert_close(deformable_ms(value, spatial, starts, loc, weights, impl="triton"), first)
    spatial[0, 1] += 1  # in place: bumps the version, so the next call checks again
    with pytest.raises(ValueError, match="sum to"):
        deformable_ms(value, spatial, starts, loc, weights, impl="triton")


@needs_cuda
def test_device_mismatch_is_an_error():
    value, loc, weights, _, spatial, starts = make_inputs(1, 3, 2, 4, ODD, 2, torch.float32, "cuda")
    with pytest.raises(ValueError, match="one device"):
        deformable_ms_triton(value, spatial, starts, loc.cpu(), weights)
