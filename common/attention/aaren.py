"""Aaren ("Attention as an RNN"): attention with a learned query, as a many-to-many RNN via a prefix scan.

For scores s_i = q . k_i (q learned, not input dependent), the output at t is softmax attention over the
prefix, o_t = sum_{i<=t} exp(s_i) v_i / sum_{i<=t} exp(s_i). It is carried as a log-sum-exp stable triple
per (sample, head), `AarenState(m, u, w)`: running max m, denominator u = sum exp(s_i - m) and numerator
w = sum exp(s_i - m) v_i, with o = w / u. Triples combine with an associative, commutative operator
(`aaren_combine`), so the prefix outputs come from a parallel prefix scan, from chunks, or token by token.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import ConfigError, check_choice, check_range

AAREN_MODES = ("parallel", "chunked", "recurrent")
IMPLS = ("auto", "torch")


class AarenState(NamedTuple):
    """The recurrent state of attention with a fixed query: o = numer / denom.

    Shapes:
        max: [B, H]; denom: [B, H]; numer: [B, H, D]. "Empty" (no token yet) is (finfo.min, 0, 0).
    """

    max: torch.Tensor
    denom: torch.Tensor
    numer: torch.Tensor


def _empty_value(dtype: torch.dtype) -> float:
    """The finite stand-in for -inf in the running max (exp(min - m) underflows to 0 without NaN)."""
    return torch.finfo(dtype).min


def aaren_combine(a: AarenState, b: AarenState) -> AarenState:
    """(m_a, u_a, w_a) + (m_b, u_b, w_b) = (m, u_a e^(m_a - m) + u_b e^(m_b - m), same for w), m = max(m_a, m_b).

    Associative and commutative; the empty state is its identity. Tensors broadcast, leading dims free.
    """
    m = torch.maximum(a.max, b.max)
    scale_a, scale_b = (a.max - m).exp(), (b.max - m).exp()
    return AarenState(
        m, a.denom * scale_a + b.denom * scale_b, a.numer * scale_a[..., None] + b.numer * scale_b[..., None]
    )


def _leaves(s: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> AarenState:
    """One state per token: (s_i, 1, v_i), or the empty state for masked tokens. Fields [B, H, N(, D)]."""
    if mask is None:
        return AarenState(s, torch.ones_like(s), v)
    keep = mask.to(torch.bool)[:, None, :]  # [B, 1, N]
    return AarenState(s.masked_fill(~keep, _empty_value(s.dtype)), keep.to(s.dtype).expand_as(s), v * keep[..., None])


def _empty_state(s: torch.Tensor, v: torch.Tensor) -> AarenState:
    b, h, _, d = v.shape
    return AarenState(s.new_full((b, h), _empty_value(s.dtype)), s.new_zeros(b, h), v.new_zeros(b, h, d))


def _output(state: AarenState) -> torch.Tensor:
    """numer / denom; zeros where no token has been seen (denom 0)."""
    seen = state.denom > 0
    return state.numer / torch.where(seen, state.denom, torch.ones_like(state.denom))[..., None]  # numer 0 if unseen


def _last(states: AarenState) -> AarenState:
    return AarenState(states.max[..., -1], states.denom[..., -1], states.numer[..., -1, :])


def _with_initial(prefix: AarenState, initial_state: AarenState | None) -> AarenState:
    """Fold the state before the sequence into every prefix (per-token fields get a token axis)."""
    if initial_state is None:
        return prefix
    init = AarenState(initial_state.max[..., None], initial_state.denom[..., None], initial_state.numer[..., None, :])
    return aaren_combine(init, prefix)


def aaren_parallel_torch(
    s: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    initial_state: AarenState | None = None,
) -> tuple[torch.Tensor, AarenState]:
    """All prefix outputs by a Hillis-Steele parallel prefix scan (the paper's form): log2(N) steps of O(N).

    Shapes:
        s: [B, H, N] scores; v: [B, H, N, D]; mask: [B, N] bool (True = real token).
        Returns o [B, H, N, D] and the state after the last token.
    """
    m, u, w = _leaves(s, v, mask)
    n, offset = s.shape[-1], 1
    while offset < n:  # after this step, position t holds tokens (t - 2*offset, t]
        earlier = AarenState(m[..., :-offset], u[..., :-offset], w[..., :-offset, :])
        later = AarenState(m[..., offset:], u[..., offset:], w[..., offset:, :])
        m2, u2, w2 = aaren_combine(earlier, later)
        m = torch.cat([m[..., :offset], m2], dim=-1)
        u = torch.cat([u[..., :offset], u2], dim=-1)
        w = torch.cat([w[..., :offset, :], w2], dim=-2)
        offset *= 2
    prefix = _with_initial(AarenState(m, u, w), initial_state)
    return _output(prefix), _last(prefix)


def aaren_chunked_torch(
    s: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    initial_state: AarenState | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, AarenState]:
    """Prefix outputs chunk by chunk: masked C x C softmax weights inside a chunk plus the carried state.

    Inside a chunk, position t's max M_t = max(m_carried, max_{i<=t} s_i) and its sums are
    u_carried e^(m_carried - M_t) + sum_{i<=t} e^(s_i - M_t) (and the same with v_i). O(N C D).

    Shapes:
        s: [B, H, N]; v: [B, H, N, D]; mask: [B, N] bool. Returns o [B, H, N, D] and the final state.
    """
    check_range("chunk_size", chunk_size, 1)
    leaves = _leaves(s, v, mask)
    state = _empty_state(s, v) if initial_state is None else initial_state
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=s.device).tril()
    outs = []
    for start in range(0, s.shape[-1], chunk_size):
        m, u, w = (x[:, :, start : start + chunk_size] for x in leaves)
        c = m.shape[-1]
        visible = causal[:c, :c]
        # running max over the carried state and the chunk prefix
        running = torch.maximum(state.max[..., None], m.cummax(dim=-1).values)  # [B, H, c]
        log_weights = (m[..., None, :] - running[..., :, None]).masked_fill(~visible, float("-inf"))
        weights = log_weights.exp() * u[..., None, :]  # [B, H, c(t), c(i)]
        carried = (state.max[..., None] - running).exp()  # [B, H, c]
        prefix = AarenState(
            running,
            state.denom[..., None] * carried + weights.sum(dim=-1),
            state.numer[..., None, :] * carried[..., None] + weights @ w,
        )
        outs.append(_output(prefix))
        state = _last(prefix)
    return torch.cat(outs, dim=-2), state


def aaren_recurrent_torch(
    s: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    initial_state: AarenState | None = None,
) -> tuple[torch.Tensor, AarenState]:
    """Prefix outputs token by token, state <- combine(state, leaf_t): O(N D) time, O(D) memory.

    Shapes:
        s: [B, H, N]; v: [B, H, N, D]; mask: [B, N] bool. Returns o [B, H, N, D] and the final state.
    """
    leaves = _leaves(s, v, mask)
    state = _empty_state(s, v) if initial_state is None else initial_state
    outs = []
    for t in range(s.shape[-1]):
        state = aaren_combine(state, AarenState(leaves.max[..., t], leaves.denom[..., t], leaves.numer[..., t, :]))
        outs.append(_output(state))
    return torch.stack(outs, dim=-2), state


def aaren_attention(
    s: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    initial_state: AarenState | None = None,
    mode: str = "parallel",
    chunk_size: int = 64,
    impl: str = "auto",
) -> tuple[torch.Tensor, AarenState]:
    """o_t = softmax(s_{<=t}) . v_{<=t} for every t; `mode` "parallel" (prefix scan), "chunked", "recurrent".

    `impl` "auto" = "torch" for now.

    Shapes:
        s: [B, H, N] scores; v: [B, H, N, D]; mask: [B, N] bool (True = real token).
        Returns o [B, H, N, D] and the state after the last token (AarenState).
    """
    check_choice("impl", impl, IMPLS)
    check_choice("mode", mode, AAREN_MODES)
    if mode == "parallel":
        return aaren_parallel_torch(s, v, mask=mask, initial_state=initial_state)
    if mode == "chunked":
        return aaren_chunked_torch(s, v, mask=mask, initial_state=initial_state, chunk_size=chunk_size)
    return aaren_recurrent_torch(s, v, mask=mask, initial_state=initial_state)


class Aaren(Mechanism):
    """Aaren: attention as a many-to-many RNN, trained in parallel and updated token by token.

    Paper: Feng, Tung, Hajimirsadeghi, Ahmed, Bengio, Mori, "Attention as an RNN" (arXiv 2405.13975, 2024).
    Cost: "parallel" mode (prefix scan) O(N log N) time, O(N) memory; "chunked" O(N C) for chunk size C;
    "recurrent" and `step` O(1) per token with a constant-size state (O(H d)).

    Per head h, with a learned query token q_h (not computed from the input):

        k_i, v_i = x_i W_k, x_i W_v;   s_i = q_h . k_i / sqrt(d)
        o_t = sum_{i<=t} softmax(s_1..s_t)_i v_i           (causal: o_t reads tokens <= t)
        y = concat_h(o) W_o

    computed by a parallel prefix scan of the log-sum-exp stable triples (m, u, w) (see the module
    docstring). `step(x_t, state)` takes one token and the state and returns (y_t, state) in constant
    memory; `forward(..., state=, return_state=True)` continues from / returns the same state.
    Choices where the paper leaves room: several heads, each with its own query (the paper's Aaren is
    written for one); the 1/sqrt(d) score scale; an output projection; query initialised N(0, 0.02^2);
    the Hillis-Steele scan (the paper names the parallel prefix scan, not the variant). A key-padding mask
    turns masked tokens into the empty state, so they change nothing; a position with no real token
    before it outputs zeros before the projection.

    Args:
        dim: model width C.
        num_heads: heads H; `dim` must be divisible by it.
        mode: "parallel" (default), "chunked" or "recurrent" (same result).
        chunk_size: chunk length for "chunked".
        causal: must be True (the default); False raises ConfigError.
        qkv_bias: bias in the key/value projection.
        proj_drop: dropout after the output projection.

    Shapes:
        x: [B, N, C]; mask: [B, N] bool (True = real token); x_t in `step`: [B, C].
        Output [B, N, C] ([B, C] from `step`); state: AarenState (max [B, H], denom [B, H], numer [B, H, d]).
    """

    capabilities = Capabilities(
        paper="Attention as an RNN (Feng et al., arXiv 2405.13975)",
        causal=True,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N log N",
        state=True,
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mode: str = "parallel",
        chunk_size: int = 64,
        causal: bool = True,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
    ):
        super().__init__(num_heads, dim=dim)
        if not causal:
            raise ConfigError("causal", causal, "True: Aaren is causal only")
        check_choice("mode", mode, AAREN_MODES)
        check_range("chunk_size", chunk_size, 1)
        self.head_dim, self.mode, self.chunk_size = dim // num_heads, mode, chunk_size
        self.query = nn.Parameter(torch.randn(num_heads, self.head_dim) * 0.02)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _scores_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [..., C] -> scores [..., H] and values [..., H, d]."""
        k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)) for t in self.kv(x).chunk(2, dim=-1))
        return (k * self.query).sum(dim=-1) * self.head_dim**-0.5, v

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        state: AarenState | None = None,
        return_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, AarenState]:
        """x: [B, N, C] -> [B, N, C] (and the state after the last token when `return_state`)."""
        s, v = self._scores_values(x)  # [B, N, H], [B, N, H, d]
        o, final = aaren_attention(
            s.transpose(1, 2),
            v.transpose(1, 2),
            mask=mask,
            initial_state=state,
            mode=self.mode,
            chunk_size=self.chunk_size,
        )
        out = self.proj_drop(self.proj(o.transpose(1, 2).flatten(2)))
        return (out, final) if return_state else out

    def step(self, x_t: torch.Tensor, state: AarenState | None = None) -> tuple[torch.Tensor, AarenState]:
        """One token: x_t [B, C] and the state (None = start) -> (y_t [B, C], new state). Constant memory."""
        s, v = self._scores_values(x_t)  # [B, H], [B, H, d]
        if state is None:
            state = AarenState(s.new_full(s.shape, _empty_value(s.dtype)), s.new_zeros(s.shape), v.new_zeros(v.shape))
        state = aaren_combine(state, AarenState(s, torch.ones_like(s), v))
        return self.proj_drop(self.proj(_output(state).flatten(1))), state
