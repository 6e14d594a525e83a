"""MNIST from the official idx files (optionally gzipped) or a Keras-style ``mnist.npz``.

Rows are the training images followed by the test images; ``holdout`` marks the test rows,
which are never drawn into the labelled pool.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import LabelledDataset
from .files import load_npz_arrays, reading, require_file
from .store import DenseStore

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """The idx format: two zero bytes, a dtype code, ndim, big-endian int32 dims, the data."""
    what = "MNIST idx"
    with reading(path, what):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
        if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
            raise DataError(f"{what}: {path} does not start with an idx header")
        ndim = raw[3]
        dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
        dtype = np.dtype(_IDX_DTYPES[raw[2]])
        offset = 4 + 4 * ndim
        count = int(np.prod(dims))
        if len(raw) - offset < count * dtype.itemsize:
            raise DataError(
                f"{what}: {path} is truncated ({len(raw) - offset} data bytes for {dims})"
            )
        return np.frombuffer(raw, dtype, count, offset).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).exists():
            return root / name
    raise DataError(f"MNIST: {root} has no {stem}[.gz]")


def load_arrays(path: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(images uint8 (N, 28, 28), labels, number of training rows)."""
    p = require_file(path, "MNIST")
    if p.is_dir():
        arrays = {k: read_idx(_find(p, stem)) for k, stem in IDX_FILES.items()}
    else:
        arrays = load_npz_arrays(p, "MNIST npz", ("x_train", "y_train", "x_test", "y_test"))
        arrays = {
            "train_images": arrays["x_train"],
            "train_labels": arrays["y_train"],
            "test_images": arrays["x_test"],
            "test_labels": arrays["y_test"],
        }
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or len(x) != len(y):
            raise DataError(f"MNIST: {p} {split} images {x.shape} do not match labels {y.shape}")
    images = np.concatenate([arrays["train_images"], arrays["test_images"]]).astype(np.uint8)
    labels = np.concatenate([arrays["train_labels"], arrays["test_labels"]]).astype(np.int64)
    return images, labels, len(arrays["train_images"])


def build(name: str, path: str, progress: bool = False) -> LabelledDataset:
    images, labels, n_train = load_arrays(path)
    ds = LabelledDataset(name, DenseStore(images[:, None]), labels, 10)
    ds.holdout = np.arange(n_train, len(labels))
    return ds
