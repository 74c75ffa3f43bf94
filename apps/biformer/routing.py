"""Which regions each query region routes to, read from a trained BiFormer without touching the core.

A forward hook on a BRA block's `qkv` projection captures q and k; the core's routing step
(`common.attention.routing_bilevel.route_regions`) is recomputed from them.
"""

from __future__ import annotations

import torch

from apps.biformer.model import GLOBAL, BiFormer
from common.attention.routing_bilevel import route_regions


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
    return route_regions(q, k, attn.n_win, attn.topk, attn.scale)


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
