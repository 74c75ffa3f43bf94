"""Shared building blocks for the apps (blocks built around the attention core)."""

from common.layers.transformer_block import TransformerBlock

__all__ = ["TransformerBlock"]
