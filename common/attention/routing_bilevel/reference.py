"""Bi-level routing attention: the readable PyTorch reference (the spec a GPU kernel must match)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _to_regions(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """[B, Hp, Wp, C] -> [B, S*S, rh*rw, C]: S x S regions in row-major order, pixels row-major inside."""
    batch, height, width, channels = x.shape
    rh, rw = height // n_win, width // n_win
    x = x.view(batch, n_win, rh, n_win, rw, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, n_win * n_win, rh * rw, channels)


def _from_regions(x: torch.Tensor, n_win: int, rh: int, rw: int) -> torch.Tensor:
    """Inverse of `_to_regions`: [B, S*S, rh*rw, C] -> [B, S*rh, S*rw, C]."""
    batch, _, _, channels = x.shape
    x = x.view(batch, n_win, n_win, rh, rw, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, n_win * rh, n_win * rw, channels)


def _grid(height: int, width: int, n_win: int) -> tuple[int, int, int, int]:
    """(rh, rw, pad_h, pad_w): region size after zero-padding the map at the bottom/right to a multiple of S."""
    rh, rw = -(-height // n_win), -(-width // n_win)
    return rh, rw, rh * n_win - height, rw * n_win - width


def _valid_regions(height: int, width: int, n_win: int, device: torch.device) -> torch.Tensor:
    """[S*S, rh*rw] bool: which pixels of each region of the zero-padded map are real tokens."""
    rh, rw, _, _ = _grid(height, width, n_win)
    valid = torch.zeros(rh * n_win, rw * n_win, dtype=torch.bool, device=device)
    valid[:height, :width] = True
    return _to_regions(valid[None, :, :, None], n_win)[0, :, :, 0]


def _affinity_means(q: torch.Tensor, k: torch.Tensor, n_win: int, scale: float):
    """(q_region * scale) @ k_region^T of the region means over real tokens, in the input dtype, and which key
    regions are all padding ([1, 1, S^2] bool; None without padding)."""
    _, height, width, _ = q.shape
    _, _, pad_h, pad_w = _grid(height, width, n_win)
    padded = pad_h > 0 or pad_w > 0
    if padded:
        q, k = (F.pad(t, (0, 0, 0, pad_w, 0, pad_h)) for t in (q, k))
    valid_r = _valid_regions(height, width, n_win, q.device)
    count = valid_r.sum(-1).clamp(min=1).to(q.dtype)[None, :, None]  # [1, S^2, 1]
    weight = valid_r.to(q.dtype)[None, :, :, None]
    q_win = (_to_regions(q, n_win) * weight).sum(2) / count
    k_win = (_to_regions(k, n_win) * weight).sum(2) / count
    affinity = (q_win * scale) @ k_win.transpose(-2, -1)  # [B, S^2, S^2]
    return affinity, (~valid_r.any(-1)[None, None, :] if padded else None)


def _affinity_fp32_sums(q: torch.Tensor, k: torch.Tensor, n_win: int, scale: float):
    """An fp32 affinity whose rows are positive multiples of `_affinity_means`' (same top-k), in a handful of
    launches: query region sums (not means) against key region means, unscaled unless `scale` <= 0. Region
    sums are one fp32 reduction over a [B, S, rh, S, rw, C] view (no region-major copy; zero padding adds
    nothing); without padding every region has the same token count and the key sums serve as means."""
    batch, height, width, channels = q.shape
    rh, rw, pad_h, pad_w = _grid(height, width, n_win)
    padded = pad_h > 0 or pad_w > 0

    def sums(t: torch.Tensor) -> torch.Tensor:
        if padded:
            t = F.pad(t, (0, 0, 0, pad_w, 0, pad_h))
        sums = t.view(batch, n_win, rh, n_win, rw, channels).sum(dim=(2, 4), dtype=torch.float32)
        return sums.view(batch, n_win * n_win, channels)

    keys = sums(k)
    if padded:
        rows = (torch.arange(rh * n_win, device=q.device) < height).view(n_win, rh).sum(1)  # real rows per region row
        cols = (torch.arange(rw * n_win, device=q.device) < width).view(n_win, rw).sum(1)
        count = (rows[:, None] * cols[None, :]).reshape(1, n_win * n_win, 1)  # real tokens per region
        keys = keys / count.clamp(min=1)
    affinity = sums(q) @ keys.transpose(-2, -1)  # [B, S^2, S^2] fp32
    if scale <= 0:
        affinity = affinity * scale
    return affinity, (count.view(1, 1, -1) == 0 if padded else None)


def route_regions(
    q: torch.Tensor, k: torch.Tensor, n_win: int, topk: int, scale: float, *, fp32: bool = False
) -> torch.Tensor:
    """The routing step of bi-level routing attention: the `topk` regions each of the S x S regions attends to.

    Region-level query/key = mean of the region's real (not padding) tokens of the detached q/k; affinity
    (q_region * scale) @ k_region^T; regions made only of padding ranked last (-inf); top-k (ties as
    `torch.topk`). Not differentiated, as in the released models.

    `fp32=False` (the reference and BiFormer's route read-out) computes this in the input dtype. `fp32=True`
    (the Triton kernel's host side) computes the same ranking in fp32 in a handful of launches
    (`_affinity_fp32_sums`): a fixed cost that dominated the kernel's time at BiFormer's shapes
    (benchmarks/README.md); it equals the fp32 reference's ranking up to fp32 rounding.

    Shapes:
        q, k: [B, H, W, Cqk]; returns route [B, S^2, topk] int64 (region ids, row-major).
    """
    affinity_of = _affinity_fp32_sums if fp32 else _affinity_means
    affinity, empty = affinity_of(q.detach(), k.detach(), n_win, scale)
    if empty is not None:
        affinity = affinity.masked_fill(empty, float("-inf"))
    return affinity.topk(topk, dim=-1).indices


def bilevel_routing_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    n_win: int,
    topk: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Bi-level routing attention core (BiFormer, Zhu et al., CVPR 2023): region routing, then token attention.

    1. Split the map into `n_win` x `n_win` regions (padding bottom/right when H or W is not divisible).
    2. Region-level query/key = mean of the region's query/key tokens (padding tokens excluded).
    3. Region affinity A_r = (q_region * scale) @ k_region^T on detached inputs (routing is not differentiated,
       as in the released models); each region keeps the indices of its `topk` most affine regions
       (steps 2-3: `route_regions`).
    4. Gather the key/value tokens of the routed regions and run softmax attention (multi-head, through
       `scaled_dot_product_attention`) from each region's query tokens to the gathered tokens.

    Padding: the map is padded with zeros at the bottom/right to a multiple of `n_win`; padded tokens are
    excluded from the region averages and masked out as keys, and regions made only of padding are never
    routed before a region with real tokens. So the result on the real tokens does not depend on the
    padding, and with `topk = n_win**2` it equals full softmax attention. (The official `auto_pad` lets
    the zero-padded tokens act as keys; we do not.)

    Args:
        q, k: queries and keys (already projected), channel-last maps.
        v: values, channel-last map.
        num_heads: heads m; Cqk and Cv must be divisible by m.
        n_win: regions per side S.
        topk: routed regions per query region (1 <= topk <= S*S).
        scale: logit scale for routing and attention; default Cqk ** -0.5 (the full qk width, as the
            official code does, not the head width).

    Shapes:
        q, k: [B, H, W, Cqk]; v: [B, H, W, Cv]; returns [B, H, W, Cv].
    """
    batch, height, width, qk_dim = q.shape
    v_dim = v.shape[-1]
    if not 1 <= topk <= n_win * n_win:
        raise ValueError(f"topk must be in [1, {n_win * n_win}] for n_win={n_win}, got {topk}")
    scale = qk_dim**-0.5 if scale is None else scale
    rh, rw, pad_h, pad_w = _grid(height, width, n_win)
    padded = pad_h > 0 or pad_w > 0
    route = route_regions(q, k, n_win, topk, scale)  # [B, S^2, topk], on the unpadded maps
    if padded:
        q, k, v = (F.pad(t, (0, 0, 0, pad_w, 0, pad_h)) for t in (q, k, v))
    regions, pixels = n_win * n_win, rh * rw
    q_r, k_r, v_r = _to_regions(q, n_win), _to_regions(k, n_win), _to_regions(v, n_win)  # [B, S^2, w^2, C]
    valid_r = _valid_regions(height, width, n_win, q.device)  # [S^2, w^2]

    def gather(t: torch.Tensor) -> torch.Tensor:
        """[B, S^2, w^2, C] -> [B, S^2, topk * w^2, C]: the tokens of each region's routed regions."""
        channels = t.shape[-1]
        index = route[:, :, :, None, None].expand(-1, -1, -1, pixels, channels)
        picked = torch.gather(t[:, None].expand(-1, regions, -1, -1, -1), 2, index)
        return picked.reshape(batch, regions, topk * pixels, channels)

    def heads(t: torch.Tensor) -> torch.Tensor:
        """[B, S^2, T, m * c] -> [B * S^2, m, T, c]."""
        tokens, channels = t.shape[2], t.shape[3]
        t = t.view(batch, regions, tokens, num_heads, channels // num_heads).permute(0, 1, 3, 2, 4)
        return t.reshape(batch * regions, num_heads, tokens, channels // num_heads)

    attn_mask = None
    if padded:
        valid_sel = torch.gather(
            valid_r[None, None].expand(batch, regions, -1, -1), 2, route[..., None].expand(-1, -1, -1, pixels)
        )
        attn_mask = valid_sel.reshape(batch * regions, 1, 1, topk * pixels)
    out = F.scaled_dot_product_attention(
        heads(q_r), heads(gather(k_r)), heads(gather(v_r)), attn_mask=attn_mask, scale=scale
    )
    out = out.view(batch, regions, num_heads, pixels, v_dim // num_heads).permute(0, 1, 3, 2, 4)
    out = _from_regions(out.reshape(batch, regions, pixels, v_dim), n_win, rh, rw)
    return out[:, :height, :width] if padded else out
