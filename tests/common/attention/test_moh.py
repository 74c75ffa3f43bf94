"""MoH (mixture-of-head attention): routing, weighted heads, equivalence to MHA with every head active."""

import pytest
import torch

from common.attention import build
from common.attention.moh import MixtureOfHeadsAttention
from common.errors import ConfigError
from tests.common.attention.helpers_c import (
    TOL,
    assert_causal,
    assert_mask_honoured,
    assert_shape_and_grads,
    make_input,
    padding_mask,
    run_mha,
    torch_mha,
)

DIM, HEADS = 16, 8


def _moh(**options) -> MixtureOfHeadsAttention:
    torch.manual_seed(0)
    return build("moh", DIM, HEADS, **options).double().eval()


def test_shapes_and_gradients():
    module = _moh(shared_heads=2, routed_topk=3).train()
    assert_shape_and_grads(module, make_input(c=DIM), mask=padding_mask(2, 10, [10, 6]))


# Balance-loss tests: 4 shared heads, R = 4 routed heads, each token picks K = 2 of them.
R, K = 4, 2


def _routed(probs: list[list[float]]) -> tuple[MixtureOfHeadsAttention, torch.Tensor]:
    """A training MoH whose router gives token t exactly the probabilities `probs[t]`.

    Token t is the unit vector e_t and router column t is log(probs[t]), so softmax(W_r x_t) = probs[t].
    """
    module = _moh(shared_heads=HEADS - R, routed_topk=K).train()
    n = len(probs)
    x = torch.zeros(1, n, DIM, dtype=torch.float64)
    x[0, range(n), range(n)] = 1.0
    with torch.no_grad():
        module.router.weight.zero_()
        module.router.weight[:, :n] = torch.tensor(probs, dtype=torch.float64).log().T
    return module, x


def test_balance_loss_matches_the_formula_by_hand():
    """L = (R / K) * sum_i f_i P_i over routed heads, real tokens only.

    The paper's load-balance loss: f_i = share of tokens that select head i, P_i = mean router probability of
    head i; the official code scales it by R / K (docstring), so that a balanced router gives exactly 1.
    """
    module, x = _routed(
        [
            [0.40, 0.30, 0.20, 0.10],  # selects heads 0, 1
            [0.10, 0.20, 0.30, 0.40],  # selects heads 2, 3
            [0.50, 0.05, 0.35, 0.10],  # selects heads 0, 2
            [0.85, 0.05, 0.05, 0.05],  # padding: must not count
        ]
    )
    module(x, mask=torch.tensor([[True, True, True, False]]))
    f = [2 / 3, 1 / 3, 2 / 3, 1 / 3]  # selections per head over the 3 real tokens
    p = [1.00 / 3, 0.55 / 3, 0.85 / 3, 0.60 / 3]  # column sums of the 3 real rows, over 3
    by_hand = R / K * sum(fi * pi for fi, pi in zip(f, p))  # = 2 * 4.85 / 9
    assert by_hand == pytest.approx(9.7 / 9, rel=1e-15)
    # float64 throughout: the only error is rounding, far below 1e-12
    assert module.aux_loss.item() == pytest.approx(by_hand, rel=1e-12)


def test_balance_loss_is_one_for_uniform_routing_and_r_over_k_when_collapsed():
    """Uniform router: P_i = 1/R, so L = R * sum_i f_i / R = 1 whatever the top-k picks. Collapsed router (every
    token puts its mass on the same K heads): f_i = P_i = 1/K on those, L = R / K, the largest value L can take
    (f_i <= 1/K, so sum_i f_i P_i <= 1/K). A random router gives a value in (0, R / K)."""
    x, mask = make_input(c=DIM), padding_mask(2, 10, [10, 7])
    module = _moh(shared_heads=HEADS - R, routed_topk=K).train()
    with torch.no_grad():
        module.router.weight.zero_()
    module(x, mask=mask)
    assert module.aux_loss.item() == pytest.approx(1.0, abs=1e-12)

    x_collapse = x.clone()
    x_collapse[..., 0] = 1.0  # one feature shared by every token ...
    with torch.no_grad():
        module.router.weight[:K, 0] = 60.0  # ... sends it to heads 0, 1: the others get e^-60 of the mass
    module(x_collapse, mask=mask)
    assert module.aux_loss.item() == pytest.approx(R / K, rel=1e-12)

    for seed in range(5):
        with torch.no_grad():
            module.router.weight.copy_(torch.randn(R, DIM, generator=torch.Generator().manual_seed(seed)))
        module(x, mask=mask)
        assert 0.0 < module.aux_loss.item() < R / K


def test_balance_loss_gradient_moves_mass_off_the_overused_heads():
    """Every real token selects routed heads 0 and 1 (f_0 = f_1 = 1), so L = R / K * (P_0 + P_1) while the
    selections stay: one small gradient step on L alone must lower the router probability of heads 0 and 1."""
    x, mask = make_input(c=DIM), padding_mask(2, 10, [10, 7])
    x[..., 0] = 1.0
    module = _moh(shared_heads=HEADS - R, routed_topk=K).train()
    with torch.no_grad():
        module.router.weight.mul_(0.1)
        module.router.weight[:K, 0] = 3.0

    def overused_mass() -> float:
        with torch.no_grad():
            probs = module.router(x[mask]).softmax(-1)
        return probs[:, :K].sum(-1).mean().item()

    gates = module.head_gates(x, mask)  # in training this also sets aux_loss
    assert (gates[..., HEADS - R : HEADS - R + K][mask] > 0).all(), "setup: every real token picks heads 0, 1"
    before = overused_mass()
    module.aux_loss.backward()
    with torch.no_grad():
        module.router.weight -= 0.1 * module.router.weight.grad
    assert overused_mass() < before


def test_no_balance_loss_in_eval_or_without_routed_heads():
    x = make_input(c=DIM)
    module = _moh(shared_heads=2, routed_topk=3)  # eval
    module(x)
    assert module.aux_loss is None
    module = _moh(shared_heads=HEADS, routed_topk=0).train()
    module(x)
    assert module.aux_loss is None


def test_each_token_uses_shared_plus_topk_heads():
    module = _moh(shared_heads=2, routed_topk=3)
    gates = module.head_gates(make_input(c=DIM))
    assert gates.shape == (2, 10, HEADS)
    assert (gates[..., :2] > 0).all(), "shared heads are always active"
    assert ((gates[..., 2:] > 0).sum(-1) == 3).all(), "exactly top-k routed heads per token"
    # two-stage weights: shared gates sum to 2 * a_s, routed to 3 * a_r, with a_s + a_r = 2
    shared_w, routed_w = gates[..., :2].sum(-1) / 2, gates[..., 2:].sum(-1) / 3
    torch.testing.assert_close(shared_w + routed_w, torch.full_like(shared_w, 2.0), **TOL)


def test_inactive_head_does_not_reach_the_token():
    """A routed head a token did not select has no effect on that token's output (weighted sum, not concat)."""
    module = _moh(shared_heads=2, routed_topk=2)
    x = make_input(c=DIM)
    gates = module.head_gates(x)
    head = 5
    off = gates[..., head] == 0  # tokens that did not pick this head
    assert off.any() and (~off).any()
    y1 = module(x)
    with torch.no_grad():  # change that head's value projection only
        d = DIM // HEADS
        module.qkv.weight[2 * DIM + head * d : 2 * DIM + (head + 1) * d] += 1.0
    y2 = module(x)
    torch.testing.assert_close(y1[off], y2[off], **TOL)
    assert not torch.allclose(y1[~off], y2[~off])


@pytest.mark.parametrize("shared_heads", [0, 1, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_all_heads_with_uniform_router_equals_multi_head_attention(shared_heads, causal):
    module = _moh(shared_heads=shared_heads, all_heads=True, causal=causal)
    with torch.no_grad():  # uniform router -> every gate is exactly 1
        for router in (module.router, module.shared_router, module.balance_router):
            if router is not None:
                router.weight.zero_()
    assert torch.allclose(module.head_gates(make_input(c=DIM)), torch.ones((), dtype=torch.float64))
    mha = torch_mha(DIM, HEADS, module.qkv.weight, module.qkv.bias, module.proj.weight, module.proj.bias)
    x, mask = make_input(c=DIM), padding_mask(2, 10, [10, 7])
    torch.testing.assert_close(module(x), run_mha(mha, x, causal=causal), **TOL)
    torch.testing.assert_close(module(x, mask=mask)[mask], run_mha(mha, x, mask, causal)[mask], **TOL)


def test_mask_and_causality():
    x = make_input(c=DIM)
    assert_mask_honoured(_moh(), x, padding_mask(2, 10, [7, 10]))
    assert_causal(_moh(causal=True), x, t=6)
    assert_causal(_moh(causal=True), x, t=6, mask=padding_mask(2, 10, [10, 8]))


def test_bad_options():
    with pytest.raises(ConfigError):
        MixtureOfHeadsAttention(DIM, HEADS, shared_heads=6, routed_topk=3)
    with pytest.raises(ConfigError):
        MixtureOfHeadsAttention(DIM, HEADS, shared_heads=0, routed_topk=0)
