"""Ground-truth factor datasets behind one interface (:class:`FactorDataset`)."""

from .base import FactorDataset, GridDataset, LabelledDataset
from .catalog import CATALOG, DatasetInfo, dataset_info
from .registry import build_dataset

__all__ = [
    "CATALOG",
    "DatasetInfo",
    "FactorDataset",
    "GridDataset",
    "LabelledDataset",
    "build_dataset",
    "dataset_info",
]
