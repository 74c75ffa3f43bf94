"""Dataset helpers shared by every app: errors, data cards, the embedded-data cache, split loaders, samplers."""

from common.data.cards import DataCard, load_card
from common.errors import DatasetError

__all__ = ["DataCard", "DatasetError", "load_card"]
