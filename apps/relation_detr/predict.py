"""Relation-DETR's predict is the shared detection one: an image in, boxes JSON and the drawn image out."""

from common.detection.predict import predict

__all__ = ["predict"]
