"""DeepMind 3D Shapes from the official ``3dshapes.h5`` (``images`` NHWC uint8, ``labels``)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataError
from .base import GridDataset, row_major_strides
from .catalog import CATALOG
from .files import NHWCStore, factor_ranks, reading, require_file

OFFICIAL_FILE = "3dshapes.h5"


def build(name: str, path: str, progress: bool = False) -> GridDataset:
    """Rows stay on disk (h5py reads them on demand); factor sizes are the numbers of distinct
    label values per column, and the rows must enumerate the grid in row-major order, as the
    official file does (floor hue slowest, orientation fastest)."""
    import h5py

    what = "Shapes3D h5"
    p = require_file(path, what)
    with reading(p, what):
        f = h5py.File(p, "r")
        images, labels = f["images"], np.asarray(f["labels"])
    if images.ndim != 4 or images.shape[3] != 3 or labels.shape != (images.shape[0], 6):
        raise DataError(
            f"{what}: {p} holds images {images.shape} and labels {labels.shape}; "
            "expected (N, 64, 64, 3) and (N, 6)"
        )
    ranks, sizes = factor_ranks(labels)
    n = images.shape[0]
    if math.prod(sizes) != n or not np.array_equal(ranks @ row_major_strides(sizes), np.arange(n)):
        raise DataError(f"{what}: {p} rows do not enumerate the factor grid {sizes} in order")
    info = CATALOG[name]
    store = NHWCStore(images)
    store._h5file = f  # keep the file open as long as the store lives
    return GridDataset(name, info.factor_names, store, sizes)
