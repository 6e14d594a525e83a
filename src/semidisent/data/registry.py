"""Dataset name (params.yaml ``data.dataset``) -> dataset object; builders imported lazily."""

from __future__ import annotations

import importlib

from .base import FactorDataset
from .catalog import dataset_info


def build_dataset(name: str, path: str | None = None, progress: bool = False) -> FactorDataset:
    info = dataset_info(name)
    module = importlib.import_module(f"{__package__}.{info.module}")
    return module.build(name, path, progress=progress)
