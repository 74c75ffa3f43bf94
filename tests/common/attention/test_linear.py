"""Linear attention (Katharopoulos et al.): explicit formula, causal parallel = chunked = recurrent, masks."""

import pytest
import torch

from common.attention import build
from common.attention.linear import (
    FEATURE_MAPS,
    LinearAttention,
    causal_linear_attention_chunked_torch,
    causal_linear_attention_parallel_torch,
    causal_linear_attention_recurrent_torch,
    elu_feature_map,
    linear_attention,
    linear_attention_torch,
)
from common.errors import ConfigError

DIM, HEADS = 16, 2


def _features(b=2, h=2, n=11, d=3, dv=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (elu_feature_map(torch.randn(b, h, n, d, generator=g, dtype=torch.float64)) for _ in range(2))
    return q, k, torch.randn(b, h, n, dv, generator=g, dtype=torch.float64)


def _linear(**options) -> LinearAttention:
    torch.manual_seed(0)
    return build("linear", DIM, HEADS, **options).double().eval()


def test_non_causal_matches_explicit_formula(checks):
    q, k, v = _features()
    attn = q @ k.transpose(-2, -1)
    expected = attn @ v / (attn.sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(linear_attention_torch(q, k, v), expected, **checks.TOL)


def test_causal_parallel_matches_explicit_formula(checks):
    q, k, v = _features()
    n = q.shape[-2]
    out = torch.empty_like(v)
    for i in range(n):  # out_i = sum_{j<=i} (q_i.k_j) v_j / sum_{j<=i} q_i.k_j
        w = (q[:, :, i : i + 1] * k[:, :, : i + 1]).sum(-1)  # [B, H, i+1]
        out[:, :, i] = (w[..., None] * v[:, :, : i + 1]).sum(-2) / (w.sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(causal_linear_attention_parallel_torch(q, k, v), out, **checks.TOL)


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 11, 16])
@pytest.mark.parametrize("masked", [False, True])
def test_causal_forms_agree(checks, chunk_size, masked):
    q, k, v = _features()
    mask = checks.padding_mask(2, 11, left=True) if masked else None
    parallel = causal_linear_attention_parallel_torch(q, k, v, mask=mask)
    chunked = causal_linear_attention_chunked_torch(q, k, v, mask=mask, chunk_size=chunk_size)
    recurrent = causal_linear_attention_recurrent_torch(q, k, v, mask=mask)
    torch.testing.assert_close(chunked, parallel, **checks.TOL)
    torch.testing.assert_close(recurrent, parallel, **checks.TOL)


def test_last_causal_output_equals_non_causal(checks):
    q, k, v = _features()
    torch.testing.assert_close(
        linear_attention(q, k, v, causal=True)[:, :, -1], linear_attention(q, k, v)[:, :, -1], **checks.TOL
    )


@pytest.mark.parametrize("feature_map", sorted(FEATURE_MAPS))
@pytest.mark.parametrize("causal", [False, True])
def test_shapes_and_grads(x64, checks, feature_map, causal):
    module = _linear(feature_map=feature_map, causal=causal, chunk_size=4).train()
    checks.shapes_and_grads(module, x64, mask=checks.padding_mask(2, 11, left=causal))


@pytest.mark.parametrize("mode", ["parallel", "chunked", "recurrent"])
def test_causal_never_looks_ahead(x64, checks, mode):
    module = _linear(causal=True, mode=mode, chunk_size=4)
    for t in (0, 5, 9):
        checks.causal(module, x64, t)


def test_module_modes_agree(x64, checks):
    outs = []
    for mode in ("parallel", "chunked", "recurrent"):
        module = _linear(causal=True, mode=mode, chunk_size=3)
        with torch.no_grad():
            outs.append(module(x64, mask=checks.padding_mask(2, 11, left=True)))
    torch.testing.assert_close(outs[1], outs[0], **checks.TOL)
    torch.testing.assert_close(outs[2], outs[0], **checks.TOL)


def test_mask_honoured(x64, checks):
    checks.mask(_linear(), x64, checks.padding_mask(2, 11))
    checks.mask(_linear(feature_map="relu"), x64, checks.padding_mask(2, 11))
    checks.mask(_linear(causal=True, chunk_size=4), x64, checks.padding_mask(2, 11, left=True))


def test_gradcheck_functional(checks):
    q, k, v = (t.detach().requires_grad_(True) for t in _features(b=1, h=1, n=5, d=2, dv=2))
    mask = torch.tensor([[False, True, True, False, True]])
    fns = [
        linear_attention_torch,
        causal_linear_attention_parallel_torch,
        lambda *a, mask=None: causal_linear_attention_chunked_torch(*a, mask=mask, chunk_size=2),
        causal_linear_attention_recurrent_torch,
    ]
    for fn in fns:
        assert torch.autograd.gradcheck(lambda *a, fn=fn: fn(*a, mask=mask), (q, k, v))


def test_errors():
    with pytest.raises(ConfigError, match="feature_map"):
        build("linear", DIM, HEADS, feature_map="softmax")
    with pytest.raises(ConfigError, match="mode"):
        build("linear", DIM, HEADS, mode="fast")
    with pytest.raises(ConfigError, match="impl"):
        linear_attention(*_features(), impl="bogus")
