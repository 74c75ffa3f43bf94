"""Lightning Attention-2: decayed linear attention, parallel = chunked (tiled) = recurrent, slopes, state."""

import math

import pytest
import torch

from common.attention import build
from common.attention.lightning_attn import LightningAttention, alibi_slopes, lightning_attention
from common.errors import ConfigError

DIM, HEADS = 16, 4
MODES = ("parallel", "chunked", "recurrent")


def _inputs(b=2, t=13, h=HEADS, d=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, t, h, d, generator=gen, dtype=torch.float64) for _ in range(3))
    s0 = torch.randn(b, h, d, d, generator=gen, dtype=torch.float64)
    return q, k, v, s0


def _lightning(**options) -> LightningAttention:
    torch.manual_seed(0)
    return build("lightning", DIM, HEADS, **options).double().eval()


def test_matches_explicit_decay_formula(checks):
    """o_t = sum_{s<=t} lambda^(t-s) (q_t . k_s) v_s + lambda^(t+1) q_t S_0, lambda_h = exp(-slope_h)."""
    q, k, v, s0 = _inputs()
    slopes = alibi_slopes(HEADS).double()
    t = q.shape[1]
    pos = torch.arange(t, dtype=torch.float64)
    dist = (pos[:, None] - pos[None, :]).clamp_min(0)
    decay = torch.exp(-slopes[:, None, None] * dist).tril()  # [H, T, T]
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, T, d]
    state_term = torch.exp(-slopes[:, None, None] * (pos[:, None] + 1)) * (qh @ s0)
    expected = (((qh @ kh.transpose(-2, -1)) * decay) @ vh + state_term).transpose(1, 2)
    for mode in MODES:
        o, _ = lightning_attention(q, k, v, slopes, initial_state=s0, mode=mode, chunk_size=4)
        torch.testing.assert_close(o, expected, **checks.TOL)


@pytest.mark.parametrize("chunk_size", [1, 4, 6, 32])
def test_forms_agree_with_state(checks, chunk_size):
    q, k, v, s0 = _inputs()
    slopes = alibi_slopes(HEADS)
    ref = lightning_attention(q, k, v, slopes, initial_state=s0, output_final_state=True, mode="parallel")
    for mode in ("chunked", "recurrent"):
        out = lightning_attention(
            q, k, v, slopes, initial_state=s0, output_final_state=True, mode=mode, chunk_size=chunk_size
        )
        torch.testing.assert_close(out[0], ref[0], **checks.TOL)
        torch.testing.assert_close(out[1], ref[1], **checks.TOL)


def test_alibi_slopes():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-i for i in range(1, 9)]))
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2.0 ** (-2 * i) for i in range(1, 5)]))
    six = alibi_slopes(6)  # 4 power-of-two slopes, then every other slope of the 8-head list
    torch.testing.assert_close(six, torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]))
    assert all(0 < s < 1 for s in alibi_slopes(12).tolist()) and len(alibi_slopes(12)) == 12


@pytest.mark.parametrize("mode", MODES)
def test_module_modes_agree_and_never_look_ahead(x64, checks, mode):
    module = _lightning(mode=mode, chunk_size=4)
    ref = _lightning(mode="parallel")
    with torch.no_grad():
        torch.testing.assert_close(module(x64), ref(x64), **checks.TOL)
    for t in (0, 5, 9):
        checks.causal(module, x64, t)


def test_shapes_and_grads(x64, checks):
    checks.shapes_and_grads(_lightning(chunk_size=4).train(), x64, mask=checks.padding_mask(2, 11, left=True))


def test_mask_honoured(x64, checks):
    checks.mask(_lightning(chunk_size=4), x64, checks.padding_mask(2, 11, left=True))


def test_state_carry(x64, checks):
    module = _lightning(chunk_size=4)
    state = torch.randn(module.state_shape(2), dtype=torch.float64)
    with torch.no_grad():
        y_full, s_full = module(x64, state=state, return_state=True)
        y1, s1 = module(x64[:, :7], state=state, return_state=True)
        y2, s2 = module(x64[:, 7:], state=s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y_full, **checks.TOL)
    torch.testing.assert_close(s2, s_full, **checks.TOL)


def test_custom_slopes_set_the_decay(x64):
    """Slopes 0 (no decay) on every head vs. huge slopes (only the current token survives)."""
    no_decay = _lightning(slopes=[0.0] * HEADS)
    assert torch.equal(no_decay.slopes, torch.zeros(HEADS, dtype=torch.float64))
    q, k, v, _ = _inputs()
    o, _ = lightning_attention(q, k, v, torch.full((HEADS,), 50.0), mode="chunked", chunk_size=4)
    torch.testing.assert_close(o, (q * k).sum(-1, keepdim=True) * v, rtol=1e-9, atol=math.exp(-50) * 100)


def test_gradcheck_functional():
    q, k, v, s0 = (t.detach().requires_grad_(True) for t in _inputs(b=1, t=5, h=2, d=2))
    slopes = torch.tensor([0.3, 1.2], dtype=torch.float64)
    for mode in MODES:
        assert torch.autograd.gradcheck(
            lambda q, k, v, s0, m=mode: lightning_attention(q, k, v, slopes, initial_state=s0, mode=m, chunk_size=2)[0],
            (q, k, v, s0),
        )


def test_errors():
    with pytest.raises(ConfigError, match="causal"):
        build("lightning", DIM, HEADS, causal=False)
    with pytest.raises(ConfigError, match="slopes"):
        build("lightning", DIM, HEADS, slopes=[0.5, 0.5])
    with pytest.raises(ConfigError, match="slopes"):
        build("lightning", DIM, HEADS, slopes=[-0.1] * HEADS)
