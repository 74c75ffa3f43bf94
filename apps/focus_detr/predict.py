"""Detect objects in an image with an exported Focus-DETR (the shared DETR predict)."""

from common.detection.predict import predict

__all__ = ["predict"]
