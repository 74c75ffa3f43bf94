"""Bi-level routing attention (BiFormer): module, dispatching op, torch reference and the region routing."""

from common.attention.routing_bilevel.module import BiLevelRoutingAttention, bilevel_routing_attention
from common.attention.routing_bilevel.reference import bilevel_routing_attention_torch, route_regions

__all__ = ["BiLevelRoutingAttention", "bilevel_routing_attention", "bilevel_routing_attention_torch", "route_regions"]
