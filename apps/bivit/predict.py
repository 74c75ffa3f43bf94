"""Classify an image with an exported BiViT (the shared vision predict)."""

from common.vision.predict import predict

__all__ = ["predict"]
