"""Aaren (attention as an RNN): prefix scan = chunked = recurrent = step-by-step = causal softmax with one query."""

import pytest
import torch

from common.attention import build
from common.attention.aaren import (
    Aaren,
    AarenState,
    aaren_attention,
    aaren_chunked_torch,
    aaren_combine,
    aaren_parallel_torch,
    aaren_recurrent_torch,
)
from common.errors import ConfigError

DIM, HEADS = 16, 2
MODES = ("parallel", "chunked", "recurrent")


def _scores_values(b=2, h=HEADS, n=13, d=3, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    s = scale * torch.randn(b, h, n, generator=gen, dtype=torch.float64)
    return s, torch.randn(b, h, n, d, generator=gen, dtype=torch.float64)


def _explicit(s, v, mask=None):
    """o_t = softmax over i <= t (real i only) of s_i, applied to v."""
    n = s.shape[-1]
    logits = s[..., None, :].expand(*s.shape, n).clone()  # [B, H, t, i]
    visible = torch.ones(n, n, dtype=torch.bool).tril()
    if mask is not None:
        visible = visible & mask[:, None, None, :]
    weights = logits.masked_fill(~visible, float("-inf")).softmax(dim=-1).nan_to_num(0.0)
    return weights @ v


def _aaren(**options) -> Aaren:
    torch.manual_seed(0)
    module = build("aaren", DIM, HEADS, **options).double().eval()
    with torch.no_grad():
        module.query.normal_(0, 1)  # a query large enough for peaky weights
    return module


def test_combine_is_associative_and_commutative(checks):
    gen = torch.Generator().manual_seed(0)
    a, b, c = (
        AarenState(torch.randn(3, generator=gen) * 5, torch.rand(3, generator=gen), torch.randn(3, 2, generator=gen))
        for _ in range(3)
    )
    left, right = aaren_combine(aaren_combine(a, b), c), aaren_combine(a, aaren_combine(b, c))
    swapped = aaren_combine(b, a)
    for x, y in zip(left, right):
        torch.testing.assert_close(x, y)
    for x, y in zip(aaren_combine(a, b), swapped):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("masked", [False, True])
def test_matches_causal_softmax_with_one_query(checks, masked):
    s, v = _scores_values()
    mask = checks.padding_mask(2, 13, left=True) if masked else None
    for mode in MODES:
        o, _ = aaren_attention(s, v, mask=mask, mode=mode, chunk_size=4)
        torch.testing.assert_close(o, _explicit(s, v, mask), **checks.TOL)


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 13, 64])
def test_forms_agree_with_initial_state(checks, chunk_size):
    s, v = _scores_values(n=13)
    s0, v0 = _scores_values(n=5, seed=1)
    _, init = aaren_parallel_torch(s0, v0)
    mask = torch.rand(2, 13, generator=torch.Generator().manual_seed(2)) > 0.3
    o_p, st_p = aaren_parallel_torch(s, v, mask=mask, initial_state=init)
    o_c, st_c = aaren_chunked_torch(s, v, mask=mask, initial_state=init, chunk_size=chunk_size)
    o_r, st_r = aaren_recurrent_torch(s, v, mask=mask, initial_state=init)
    for o, st in ((o_c, st_c), (o_r, st_r)):
        torch.testing.assert_close(o, o_p, **checks.TOL)
        for x, y in zip(st, st_p):
            torch.testing.assert_close(x, y, **checks.TOL)
    # carrying the state equals attending over the concatenation
    whole, _ = aaren_parallel_torch(
        torch.cat([s0, s], -1), torch.cat([v0, v], -2), mask=torch.cat([torch.ones(2, 5, dtype=torch.bool), mask], -1)
    )
    torch.testing.assert_close(o_p, whole[..., 5:, :], **checks.TOL)


def test_log_sum_exp_stable_for_huge_scores(checks):
    s, v = _scores_values(scale=1000.0)
    ref = _explicit(s, v)
    for mode in MODES:
        o, state = aaren_attention(s, v, mode=mode, chunk_size=4)
        assert torch.isfinite(o).all() and all(torch.isfinite(x).all() for x in state)
        torch.testing.assert_close(o, ref, **checks.TOL)


def test_step_equals_parallel_forward(x64, checks):
    module = _aaren()
    with torch.no_grad():
        y_parallel, final = module(x64, return_state=True)
        state, steps = None, []
        for t in range(x64.shape[1]):
            y_t, state = module.step(x64[:, t], state)
            steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, dim=1), y_parallel, **checks.TOL)
    for x, y in zip(state, final):
        torch.testing.assert_close(x, y, **checks.TOL)
    assert state.numer.shape == (2, HEADS, DIM // HEADS)  # constant-size state


@pytest.mark.parametrize("mode", MODES)
def test_module_modes_agree_state_carry_and_causal(x64, checks, mode):
    module = _aaren(mode=mode, chunk_size=4)
    ref = _aaren(mode="parallel")
    with torch.no_grad():
        torch.testing.assert_close(module(x64), ref(x64), **checks.TOL)
        y1, st = module(x64[:, :6], return_state=True)
        y2 = module(x64[:, 6:], state=st)
        torch.testing.assert_close(torch.cat([y1, y2], dim=1), ref(x64), **checks.TOL)
    for t in (0, 5, 9):
        checks.causal(module, x64, t)


def test_shapes_and_grads(x64, checks):
    checks.shapes_and_grads(_aaren().train(), x64, mask=checks.padding_mask(2, 11, left=True))


def test_mask_honoured(x64, checks):
    module = _aaren(chunk_size=4)
    checks.mask(module, x64, checks.padding_mask(2, 11, left=True))
    mid = torch.tensor([[True, False, True, True, False, False, True, True, True, False, True]] * 2)
    checks.mask(module, x64, mid)


def test_gradcheck_functional(checks):
    s, v = (t.detach().requires_grad_(True) for t in _scores_values(b=1, h=1, n=6, d=2))
    mask = torch.tensor([[False, True, True, False, True, True]])
    for fn in (
        aaren_parallel_torch,
        aaren_recurrent_torch,
        lambda *a, **kw: aaren_chunked_torch(*a, chunk_size=4, **kw),
    ):
        assert torch.autograd.gradcheck(lambda s, v, fn=fn: fn(s, v, mask=mask)[0], (s, v))


def test_errors():
    with pytest.raises(ConfigError, match="causal"):
        build("aaren", DIM, HEADS, causal=False)
    with pytest.raises(ConfigError, match="mode"):
        build("aaren", DIM, HEADS, mode="scan")
