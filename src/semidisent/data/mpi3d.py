"""MPI3D (toy / realistic / real) from the official npz (``images`` NHWC uint8, grid order)."""

from __future__ import annotations

import math

from ..errors import DataError
from .base import GridDataset
from .catalog import CATALOG
from .files import NHWCStore, load_npz_arrays, require_file


def build(
    name: str, path: str, factor_sizes: tuple[int, ...] | None = None, progress: bool = False
) -> GridDataset:
    """The file has no labels: rows are the grid in row-major order of the official sizes
    (``factor_sizes`` overrides them for a reduced file)."""
    what = f"{name} npz"
    info = CATALOG[name]
    sizes = tuple(factor_sizes or info.factor_sizes)
    p = require_file(path, what)
    images = load_npz_arrays(p, what, ("images",))["images"]
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[0] != math.prod(sizes):
        raise DataError(
            f"{what}: {p} holds images {images.shape}; expected "
            f"({math.prod(sizes)}, 64, 64, 3) for the grid {sizes}"
        )
    return GridDataset(name, info.factor_names, NHWCStore(images), sizes)
