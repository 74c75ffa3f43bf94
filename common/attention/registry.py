"""The attention registry: names -> mechanism classes, each declaring what it can serve.

Mechanisms are listed once, in `MECHANISMS` (name -> "module:Class"), and imported on first use, so
`import common.attention` stays cheap and a broken optional kernel never hides the references.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass

from torch import nn

from common.errors import ConfigError

# name -> "module:Class". One line per mechanism; the class carries its `capabilities`.
MECHANISMS: dict[str, str] = {
    "softmax": "common.attention.softmax:SoftmaxAttention",
    "efficient": "common.attention.efficient:EfficientAttention",
    "channel": "common.attention.channel:ChannelAttention",
    "cross_efficient": "common.attention.cross_efficient:EfficientCrossAttention",
    "linear": "common.attention.linear:LinearAttention",
    "favor": "common.attention.favor:FavorAttention",
    "gla": "common.attention.gla:GatedLinearAttention",
    "routing_bilevel": "common.attention.routing_bilevel:BiLevelRoutingAttention",
    "deformable_ms": "common.attention.deformable_ms:MultiScaleDeformableAttention",
    "binary_sab": "common.attention.binary_sab:BinarySoftmaxAttention",
    "agent": "common.attention.agent:AgentAttention",
    "flow": "common.attention.flow:FlowAttention",
    "hedgehog": "common.attention.hedgehog:HedgehogAttention",
    "softplus": "common.attention.softplus:SoftplusAttention",
    "moh": "common.attention.moh:MixtureOfHeadsAttention",
    "kmeans_routing": "common.attention.kmeans_routing:KMeansRoutingAttention",
    "mla": "common.attention.mla:MultiHeadLatentAttention",
    "aaren": "common.attention.aaren:Aaren",
    "lightning": "common.attention.lightning_attn:LightningAttention",
    "gaussian": "common.attention.gaussian:GaussianAdaptiveAttention",
    "inline": "common.attention.inline:InLineAttention",
    "rcmha": "common.attention.rcmha:RelativeConvAttention",
    "offset": "common.attention.offset:OffsetAttention",
}


@dataclass(frozen=True)
class Capabilities:
    """What a mechanism can serve. `build` checks requests against it.

    Attributes:
        paper: short citation (title, venue/arXiv id).
        causal: can run with `causal=True` (no token sees a later one).
        layout: token layout it needs: "tokens" (any [B, N, C]), "2d" (needs `hw=(H, W)`),
            "3d" (needs `dhw=(D, H, W)`), "any" (tokens, 2-D or 3-D), "multiscale" (deformable inputs).
        mask: honours a key-padding `mask[B, N]` (True = real token).
        bias: accepts an additive per-head `bias[B, H, N, N]`.
        cost: time/memory order in sequence length N: "N^2", "N", "N log N", "N sqrt N", "N k".
        state: takes and returns a recurrent state (`state=`, `return_state=True`).
        token_mixer: a self-attention token mixer with the shared call `forward(x[B, N, C], mask=None)`,
            usable in the generic transformer block.
        qkv_bias: takes a `qkv_bias` option (bias on its query/key/value projections); the generic block
            passes its own `qkv_bias` only to these.
    """

    paper: str
    causal: bool = False
    layout: str = "tokens"
    mask: bool = False
    bias: bool = False
    cost: str = "N^2"
    state: bool = False
    token_mixer: bool = True
    qkv_bias: bool = False


def get_class(name: str) -> type[nn.Module]:
    """The mechanism class registered as `name`; unknown names list the known ones."""
    if name not in MECHANISMS:
        raise ConfigError("attention", name, f"one of {sorted(MECHANISMS)}")
    module_name, cls_name = MECHANISMS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def capabilities(name: str) -> Capabilities:
    return get_class(name).capabilities


def available(**requirements) -> list[str]:
    """Registered names whose capabilities match every requirement, e.g. `available(causal=True)`."""
    unknown = set(requirements) - set(Capabilities.__dataclass_fields__)
    if unknown:
        raise ConfigError(
            "requirements", sorted(unknown), f"fields of Capabilities: {list(Capabilities.__dataclass_fields__)}"
        )
    return [n for n in MECHANISMS if all(asdict(capabilities(n))[k] == v for k, v in requirements.items())]


# option passed to a mechanism -> the capability it needs
_OPTION_NEEDS = {"causal": "causal"}


def build(name: str, dim: int, num_heads: int, **options) -> nn.Module:
    """Build mechanism `name` as `Class(dim, num_heads, **options)`.

    A request the mechanism cannot serve (e.g. `causal=True` for a non-causal one) raises a
    ConfigError naming the mechanisms that can.
    """
    cls = get_class(name)
    for option, field in _OPTION_NEEDS.items():
        if options.get(option) and not getattr(cls.capabilities, field):
            able = available(**{field: True})
            raise ConfigError("attention", name, f"a mechanism that supports {option}=True: one of {able}")
    return cls(dim, num_heads, **options)
