"""CIFAR-10 from the official python version (``cifar-10-python.tar.gz`` unpacked:
``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` and ``test_batch``).

Each batch is a pickled dict with ``data`` (N, 3072) uint8, each row the 1024 red, then green,
then blue values of a 32x32 image in row-major order, and ``labels`` (N ints, 0-9). The pickles are
read with an unpickler that builds only the types the official files hold (dicts, lists, bytes,
numpy arrays), so a file that would run code is refused instead of executed. Rows are the
training batches followed by the test batch, which is the ``holdout`` (never drawn into the
labelled pool). ``data.path``: the folder, or one batch file (then no test split).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .base import LabelledDataset
from .files import reading, require_file
from .store import DenseStore

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
# What numpy's pickles of the official arrays reference (and nothing else).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name} (not part of a CIFAR-10 batch)")


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) of one batch file."""
    with reading(path, "CIFAR-10 batch"):
        try:
            d = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        except pickle.UnpicklingError as e:
            raise DataError(f"CIFAR-10 batch: {path} is not a CIFAR-10 python batch ({e})") from e
        if not isinstance(d, dict):
            raise DataError(f"CIFAR-10 batch: {path} holds a {type(d).__name__}, not a dict")
        data = d.get(b"data", d.get("data"))
        labels = d.get(b"labels", d.get("labels"))
        if data is None or labels is None:
            raise DataError(f"CIFAR-10 batch: {path} has no data / labels entries")
        data = np.asarray(data)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(
            f"CIFAR-10 batch: {path} holds data {data.shape} and {len(labels)} labels; "
            "expected (N, 3072) and N"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"CIFAR-10 batch: {path} has labels outside 0-9")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels


def build(name: str, path: str, progress: bool = False) -> LabelledDataset:
    p = require_file(path, "CIFAR-10")
    if p.is_dir():
        root = p / "cifar-10-batches-py" if (p / "cifar-10-batches-py").is_dir() else p
        parts = [load_batch(require_file(root / b, "CIFAR-10")) for b in TRAIN_BATCHES]
        test = load_batch(require_file(root / TEST_BATCH, "CIFAR-10"))
        n_train = sum(len(y) for _, y in parts)
        images = np.concatenate([x for x, _ in parts] + [test[0]])
        labels = np.concatenate([y for _, y in parts] + [test[1]])
    else:
        images, labels = load_batch(p)
        n_train = len(labels)
    ds = LabelledDataset(name, DenseStore(np.ascontiguousarray(images)), labels, 10)
    ds.holdout = np.arange(n_train, len(labels))
    return ds
