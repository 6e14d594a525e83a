"""Labellers: how the ground-truth factors of the labelled pool are degraded (METHODS.md 2).

Each returns processed labels (n, F) and the number of values each label column can take.
The observed mask is separate (:mod:`.mask`): labellers change values, masks only hide.
"""

from __future__ import annotations

import numpy as np


def perfect(
    factors: np.ndarray, sizes: tuple[int, ...], rng: np.random.Generator, **_: object
) -> tuple[np.ndarray, tuple[int, ...]]:
    return factors.copy(), tuple(sizes)


def binned(
    factors: np.ndarray,
    sizes: tuple[int, ...],
    rng: np.random.Generator,
    num_bins: int = 5,
    **_: object,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Factors with more than num_bins values: y <- min(floor(y / (k / num_bins)), num_bins - 1)."""
    out = factors.copy()
    label_sizes = list(sizes)
    for j, k in enumerate(sizes):
        if k > num_bins:
            out[:, j] = np.minimum(np.floor(factors[:, j] / (k / num_bins)), num_bins - 1)
            label_sizes[j] = num_bins
    return out, tuple(label_sizes)


def noisy(
    factors: np.ndarray,
    sizes: tuple[int, ...],
    rng: np.random.Generator,
    noise_prob: float = 0.1,
    **_: object,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Each entry is replaced, with probability noise_prob, by a uniform random value."""
    out = factors.copy()
    replace = rng.random(factors.shape) < noise_prob
    random_values = np.floor(rng.random(factors.shape) * np.asarray(sizes)).astype(np.int64)
    out[replace] = random_values[replace]
    return out, tuple(sizes)


LABELLERS = {"perfect": perfect, "binned": binned, "noisy": noisy, "partial": perfect}
