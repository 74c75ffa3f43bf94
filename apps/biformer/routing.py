"""Which regions each query region routes to, read from a trained BiFormer without touching the core.

A forward hook on a BRA block's `qkv` projection captures q and k; the routing step of
`common.attention.routing_bilevel` (region means of the detached q/k over real tokens, affinity
(q_r * scale) @ k_r^T, top-k, regions made only of padding never chosen) is recomputed from them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from apps.biformer.model import GLOBAL, BiFormer


def region_means(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """[B, H, W, C] -> [B, S*S, C]: mean of the real tokens of each of the S x S regions (zero-padded map)."""
    batch, height, width, channels = x.shape
    rh, rw = -(-height // n_win), -(-width // n_win)
    pad = (0, 0, 0, rw * n_win - width, 0, rh * n_win - height)
    valid = F.pad(torch.ones(1, height, width, 1, dtype=x.dtype, device=x.device), pad)
    x = F.pad(x, pad)

    def regions(t: torch.Tensor) -> torch.Tensor:
        t = t.view(t.shape[0], n_win, rh, n_win, rw, t.shape[-1]).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(t.shape[0], n_win * n_win, rh * rw, t.shape[-1]).sum(2)

    count = regions(valid)  # [1, S^2, 1]
    return regions(x) / count.clamp(min=1), count[0, :, 0] > 0


def routes_of_block(block, x_map: torch.Tensor) -> torch.Tensor:
    """Route indices [B, S*S, topk] that `block.attn` computes for its normalised input map [B, H, W, C]."""
    attn = block.attn
    captured = {}
    handle = attn.qkv.register_forward_hook(lambda mod, inp, out: captured.setdefault("qkv", out))
    try:
        attn(x_map)
    finally:
        handle.remove()
    q, k, _ = captured["qkv"].split([attn.qk_dim, attn.qk_dim, attn.dim], dim=-1)
    q_win, valid = region_means(q.detach(), attn.n_win)
    k_win, _ = region_means(k.detach(), attn.n_win)
    affinity = (q_win * attn.scale) @ k_win.transpose(-2, -1)
    affinity = affinity.masked_fill(~valid[None, None, :], float("-inf"))
    return affinity.topk(attn.topk, dim=-1).indices


@torch.no_grad()
def last_block_routes(net: BiFormer, image: torch.Tensor) -> dict[int, dict]:
    """For each routing stage (top-k > 0, more than one region): the last block's routes for `image`.

    Args: net: a BiFormer; image: [1, C, H, W] normalised. Returns {stage: {"routes": [S*S, topk],
    "n_win": S, "map": (H_s, W_s)}}.
    """
    out = {}
    x = image
    for i, (down, stage) in enumerate(zip(net.downsample_layers, net.stages)):
        x = down(x)
        for j, block in enumerate(stage):
            if j == len(stage) - 1 and net.topks[i] != GLOBAL and net.n_wins[i] > 1:
                y = x + block.pos_embed(x)
                routes = routes_of_block(block, block.norm1(y.permute(0, 2, 3, 1)))
                out[i] = {"routes": routes[0], "n_win": net.n_wins[i], "map": tuple(x.shape[-2:])}
            x = block(x)
    return out
