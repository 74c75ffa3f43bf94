"""Gated Linear Attention: parallel = chunked = recurrent, state in/out, masks, causality, gradcheck."""

import pytest
import torch
import torch.nn.functional as F

from common.attention import build
from common.attention.gla import (
    GatedLinearAttention,
    gla,
    gla_chunked_torch,
    gla_parallel_torch,
    gla_recurrent_torch,
)
from common.errors import ConfigError

DIM, HEADS = 16, 2
MODES = ("parallel", "chunked", "recurrent")


def _inputs(b=2, t=13, h=2, dk=3, dv=4, seed=0, gate_scale=1.0):
    """q, k, g: [B, T, H, K], v: [B, T, H, V], g = logsigmoid(.) <= 0, and an initial state [B, H, K, V]."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, t, h, dk, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(b, t, h, dv, generator=gen, dtype=torch.float64)
    g = F.logsigmoid(gate_scale * torch.randn(b, t, h, dk, generator=gen, dtype=torch.float64))
    s0 = torch.randn(b, h, dk, dv, generator=gen, dtype=torch.float64)
    return q, k, v, g, s0


def _gla(**options) -> GatedLinearAttention:
    torch.manual_seed(0)
    module = build("gla", DIM, HEADS, **options).double().eval()
    with torch.no_grad():  # spread the gates so that decay matters
        module.gk_proj[1].bias.uniform_(-4, 4)
    return module


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 13, 64])
@pytest.mark.parametrize("with_state", [False, True])
def test_forms_agree(checks, chunk_size, with_state):
    q, k, v, g, s0 = _inputs()
    s0 = s0 if with_state else None
    o_p, s_p = gla_parallel_torch(q, k, v, g, initial_state=s0, output_final_state=True)
    o_c, s_c = gla_chunked_torch(q, k, v, g, initial_state=s0, output_final_state=True, chunk_size=chunk_size)
    o_r, s_r = gla_recurrent_torch(q, k, v, g, initial_state=s0, output_final_state=True)
    for o, s in ((o_c, s_c), (o_r, s_r)):
        torch.testing.assert_close(o, o_p, **checks.TOL)
        torch.testing.assert_close(s, s_p, **checks.TOL)


def test_without_gates_is_unnormalised_causal_linear_attention(checks):
    """g = 0 (no forgetting): o = tril(scale q k^T) v + scale q S_0."""
    q, k, v, _, s0 = _inputs()
    scale = q.shape[-1] ** -0.5
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    expected = ((scale * qh @ kh.transpose(-2, -1)).tril() @ vh + scale * qh @ s0).transpose(1, 2)
    for mode in MODES:
        o, _ = gla(q, k, v, torch.zeros_like(q), initial_state=s0, mode=mode, chunk_size=4)
        torch.testing.assert_close(o, expected, **checks.TOL)


def test_explicit_single_channel_decay(checks):
    """One key channel, one head: o_t = sum_{s<=t} q_t k_s v_s prod_{r=s+1..t} exp(g_r) (* scale)."""
    q, k, v, g, _ = _inputs(b=1, t=6, h=1, dk=1, dv=1)
    o, _ = gla(q, k, v, g, scale=1.0, mode="chunked", chunk_size=4)
    for t in range(6):
        expected = sum(q[0, t] * k[0, s] * v[0, s] * g[0, s + 1 : t + 1].sum().exp() for s in range(t + 1))
        torch.testing.assert_close(o[0, t], expected.reshape(1, 1), **checks.TOL)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("split", [1, 5, 8])
def test_state_carry_equals_one_pass(checks, mode, split):
    """Running [0:T1] then [T1:T] from the carried state equals running [0:T] at once (outputs and state)."""
    q, k, v, g, s0 = _inputs()
    o_full, s_full = gla(q, k, v, g, initial_state=s0, output_final_state=True, mode=mode, chunk_size=4)
    first = [t[:, :split] for t in (q, k, v, g)]
    second = [t[:, split:] for t in (q, k, v, g)]
    o1, s1 = gla(*first, initial_state=s0, output_final_state=True, mode=mode, chunk_size=4)
    o2, s2 = gla(*second, initial_state=s1, output_final_state=True, mode=mode, chunk_size=4)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), o_full, **checks.TOL)
    torch.testing.assert_close(s2, s_full, **checks.TOL)


def test_strong_decay_is_stable(checks):
    """Gates near log(0): every exponent stays <= 0, so no overflow in the chunked form."""
    q, k, v, g, s0 = _inputs(gate_scale=60.0)
    o_c, s_c = gla(q, k, v, g, initial_state=s0, output_final_state=True, mode="chunked", chunk_size=8)
    o_r, s_r = gla(q, k, v, g, initial_state=s0, output_final_state=True, mode="recurrent")
    assert torch.isfinite(o_c).all() and torch.isfinite(s_c).all()
    torch.testing.assert_close(o_c, o_r, **checks.TOL)
    torch.testing.assert_close(s_c, s_r, **checks.TOL)


def test_low_precision_inputs_keep_dtype():
    q, k, v, g, s0 = (t.float() for t in _inputs())
    o, s = gla(q.bfloat16(), k.bfloat16(), v.bfloat16(), g.bfloat16(), initial_state=s0, output_final_state=True)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32
    ref, _ = gla(q, k, v, g.bfloat16().float(), initial_state=s0)
    torch.testing.assert_close(o.float(), ref, rtol=0.05, atol=0.05)


def test_gradcheck_functional():
    q, k, v, g, s0 = (t.detach().requires_grad_(True) for t in _inputs(b=1, t=5, h=1, dk=2, dv=2))
    for fn in (
        gla_parallel_torch,
        gla_recurrent_torch,
        lambda *a, **kw: gla_chunked_torch(*a, chunk_size=2, **kw),
    ):

        def run(q, k, v, g, s0, fn=fn):
            return fn(q, k, v, g, initial_state=s0, output_final_state=True)

        assert torch.autograd.gradcheck(run, (q, k, v, g, s0))


def test_shapes_and_grads(x64, checks):
    checks.shapes_and_grads(_gla().train(), x64, mask=checks.padding_mask(2, 11, left=True))


@pytest.mark.parametrize("mode", MODES)
def test_causal_never_looks_ahead(x64, checks, mode):
    module = _gla(mode=mode, chunk_size=4)
    for t in (0, 5, 9):
        checks.causal(module, x64, t)


def test_mask_honoured_and_equals_dropping_padding(x64, checks):
    module = _gla(chunk_size=4)
    mask = checks.padding_mask(2, 11, left=True)
    checks.mask(module, x64, mask)
    mid = torch.tensor([[True, False, True, True, False, False, True, True, True, False, True]] * 2)
    checks.mask(module, x64, mid)
    with torch.no_grad():  # masked tokens neither write nor decay: same as removing them
        torch.testing.assert_close(
            module(x64, mask=mid)[mid[:1].expand(2, -1)].reshape(2, -1, DIM), module(x64[:, mid[0]])
        )


@pytest.mark.parametrize("mode", MODES)
def test_module_state_carry_and_initial_state_tuning(x64, checks, mode):
    module = _gla(mode=mode, chunk_size=4)
    state = torch.randn(module.state_shape(1), dtype=torch.float64, requires_grad=True)  # broadcast over batch
    y_full, s_full = module(x64, state=state, return_state=True)
    y1, s1 = module(x64[:, :6], state=state, return_state=True)
    y2, s2 = module(x64[:, 6:], state=s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y_full, **checks.TOL)
    torch.testing.assert_close(s2, s_full, **checks.TOL)
    assert s_full.shape == module.state_shape(2)
    y_full.square().sum().backward()  # the initial state is trainable (Lina-Speech's initial-state tuning)
    assert state.grad is not None and torch.isfinite(state.grad).all() and state.grad.abs().sum() > 0


def test_mode_override_per_call(x64, checks):
    """A chunked layer stepped token by token with mode="recurrent" gives its chunked output and state."""
    module = _gla(mode="chunked", chunk_size=4)
    y_full, s_full = module(x64, return_state=True)
    state, steps = None, []
    for t in range(x64.shape[1]):
        y, state = module(x64[:, t : t + 1], state=state, return_state=True, mode="recurrent")
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, dim=1), y_full, **checks.TOL)
    torch.testing.assert_close(state, s_full, **checks.TOL)
    with pytest.raises(ConfigError, match="mode"):
        module(x64, mode="fused")


def test_errors():
    with pytest.raises(ConfigError, match="causal"):
        build("gla", DIM, HEADS, causal=False)
    with pytest.raises(ConfigError, match="mode"):
        build("gla", DIM, HEADS, mode="fused")
    with pytest.raises(ConfigError, match="expand_k"):
        build("gla", DIM, 3)
    with pytest.raises(ConfigError, match="impl"):
        gla(*_inputs()[:4], impl="bogus")
