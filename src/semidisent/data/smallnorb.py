"""SmallNORB from the official binary matrix files (training + testing chunks).

As in disentanglement_lib: the first camera's image resized 96 -> 64 with Lanczos, factors
(category, instance, elevation, azimuth / 2, lighting), instance a nuisance drawn at
observation time, rows found through a lookup table (the files are not in grid order).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import GridDataset
from .catalog import CATALOG
from .files import factor_ranks, reading, require_file
from .store import DenseStore

CHUNKS = ("5x46789x9x18x6x2x96x96-training", "5x01235x9x18x6x2x96x96-testing")
_DTYPES = {
    0x1E3D4C55: np.uint8,
    0x1E3D4C54: np.int32,
    0x1E3D4C51: np.float32,
    0x1E3D4C53: np.float64,
}


def read_norb_matrix(path: Path) -> np.ndarray:
    """The NORB binary matrix format: magic, ndim, max(3, ndim) dims, then the data."""
    what = "SmallNORB matrix"
    with reading(path, what):
        raw = path.read_bytes()
        magic, ndim = (int(v) for v in np.frombuffer(raw, "<i4", 2))
        if magic not in _DTYPES or not 0 < ndim <= 8:
            raise DataError(f"{what}: {path} has an unknown header (magic {magic:#x}, ndim {ndim})")
        eff = max(3, ndim)
        dims = tuple(int(d) for d in np.frombuffer(raw, "<i4", eff, 8)[:ndim])
        offset = 8 + 4 * eff
        dtype = np.dtype(_DTYPES[magic]).newbyteorder("<")
        count = math.prod(dims)
        if len(raw) - offset < count * dtype.itemsize:
            raise DataError(
                f"{what}: {path} is truncated: {len(raw) - offset} bytes of data for dims {dims}"
            )
        return np.frombuffer(raw, dtype, count, offset).reshape(dims)


def _resize(images: np.ndarray, size: int = 64) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(images), 1, size, size), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i, 0] = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS))
    return out


def build(name: str, path: str, progress: bool = False) -> GridDataset:
    root = require_file(path, "SmallNORB folder")
    images, features = [], []
    for chunk in CHUNKS:
        files = {kind: root / f"smallnorb-{chunk}-{kind}.mat" for kind in ("dat", "cat", "info")}
        for f in files.values():
            require_file(f, "SmallNORB")
        dat = read_norb_matrix(files["dat"])
        cat = read_norb_matrix(files["cat"])
        info = read_norb_matrix(files["info"])
        if (
            dat.ndim != 4
            or dat.shape[1] != 2
            or len(cat) != len(dat)
            or info.shape != (len(dat), 4)
        ):
            raise DataError(
                f"SmallNORB: {root} chunk {chunk} has dat {dat.shape}, cat {cat.shape}, "
                f"info {info.shape}"
            )
        images.append(_resize(dat[:, 0]))
        features.append(np.column_stack([cat, info]))
    feats = np.concatenate(features)
    # Values -> indices (azimuth 0, 2, ..., 34 -> 0..17; instances 0..9).
    ranks, sizes = factor_ranks(feats)
    n = len(feats)
    if math.prod(sizes) != n:
        raise DataError(f"SmallNORB: {root} has {n} images for a grid of {sizes}")
    state = ranks @ np.array([math.prod(sizes[i + 1 :]) for i in range(5)], dtype=np.int64)
    if len(np.unique(state)) != n:
        raise DataError(f"SmallNORB: {root} does not cover the factor grid {sizes}")
    lookup = np.empty(n, dtype=np.int64)
    lookup[state] = np.arange(n)
    info_ = CATALOG[name]
    return GridDataset(
        name,
        info_.factor_names,
        DenseStore(np.concatenate(images)),
        sizes,
        latent=(0, 2, 3, 4),
        lookup=lookup,
    )
