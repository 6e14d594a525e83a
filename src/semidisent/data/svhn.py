"""SVHN cropped digits from the official ``*_32x32.mat`` files (``X`` HWCN, ``y`` with 10 = 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import LabelledDataset
from .files import reading, require_file
from .store import DenseStore

SPLITS = ("train_32x32.mat", "test_32x32.mat")


def load_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    with reading(path, "SVHN mat"):
        m = scipy.io.loadmat(path)
        x, y = m["X"], np.asarray(m["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise DataError(f"SVHN: {path} holds X {x.shape} and y {y.shape}; expected (32, 32, 3, N)")
    y = np.where(y == 10, 0, y).astype(np.int64)  # the official files label digit 0 as 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8), y


def build(name: str, path: str, progress: bool = False) -> LabelledDataset:
    p = require_file(path, "SVHN")
    if p.is_dir():
        parts = [load_mat(require_file(p / s, "SVHN")) for s in SPLITS]
        n_train = len(parts[0][1])
        images = np.concatenate([x for x, _ in parts])
        labels = np.concatenate([y for _, y in parts])
    else:
        images, labels = load_mat(p)
        n_train = len(labels)
    ds = LabelledDataset(name, DenseStore(images), labels, 10)
    ds.holdout = np.arange(n_train, len(labels))
    return ds
