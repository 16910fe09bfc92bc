"""Data: datasets, the DataLoader (batches with background prefetch) and train/valid splits.

Read core.py first (a dataset, collate, the DataLoader, DataLoaders), then splitters.py.
"""
from .core import ArrayDataset, DataLoader, DataLoaders, Subset, collate, decode_workers  # noqa: F401
from .splitters import ColSplitter, IndexSplitter, MaskSplitter, RandomSplitter, TimeSplitter  # noqa: F401
from .external import ChecksumError, DataNotFoundError, URLs, find_data, untar_data  # noqa: F401

__all__ = ["ArrayDataset", "Subset", "collate", "DataLoader", "DataLoaders", "decode_workers",
           "RandomSplitter", "IndexSplitter", "MaskSplitter", "ColSplitter", "TimeSplitter"]
