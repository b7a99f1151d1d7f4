"""Data sets (in-memory uint8 tensors) and the device-resident loader."""

from latentgeo.data.datasets import (
    DATASETS,
    DataBundle,
    DatasetUnavailable,
    Split,
    load_digits,
    load_synthetic,
)
from latentgeo.data.loader import TensorLoader

__all__ = [
    "DATASETS",
    "DataBundle",
    "DatasetUnavailable",
    "Split",
    "TensorLoader",
    "load_dataset",
    "load_digits",
    "load_synthetic",
]


def load_dataset(cfg) -> DataBundle:
    """Load ``cfg`` (a DatasetConfig) into memory."""
    return DATASETS[cfg.name](cfg)
