"""Classify an image with an exported FMViT (the shared vision predict)."""

from common.vision.predict import predict

__all__ = ["predict"]
