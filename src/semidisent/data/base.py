"""The one dataset interface shared by preparation, supervision, training and metrics.

Modelled on disentanglement_lib's ``GroundTruthData``: factor names and sizes, the observation
shape, ``sample_factors(n, rng)``, ``observations(factors, rng)``, and the map between dataset
rows and factor vectors. Two implementations cover every dataset:

- :class:`GridDataset`: one image per combination of factor values (dSprites, Shapes3D, MPI3D,
  SmallNORB, Cars3D); rows are the grid in row-major order (last factor fastest) unless the
  file stores another order (``lookup``). Factors not exposed to the user (nuisances such as
  SmallNORB's instance) are drawn at observation time, as dlib does.
- :class:`LabelledDataset`: images with class labels (MNIST, SVHN, digits); an observation for a
  label is a random image of that class.

Random draws take a ``np.random.RandomState`` and happen in disentanglement_lib's order (one
``randint`` per factor, in factor order), so metric sampling can follow dlib's stream exactly.
"""

from __future__ import annotations

import abc
import math

import numpy as np

from .store import ImageStore
from .variants import Variant


def row_major_strides(sizes: tuple[int, ...]) -> np.ndarray:
    strides = np.ones(len(sizes), dtype=np.int64)
    for i in range(len(sizes) - 2, -1, -1):
        strides[i] = strides[i + 1] * sizes[i + 1]
    return strides


class FactorDataset(abc.ABC):
    name: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    store: ImageStore
    variant: Variant | None = None
    # Rows never drawn into the labelled pool (the official test split of MNIST / SVHN).
    holdout: np.ndarray | None = None

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    @property
    def num_rows(self) -> int:
        return len(self.store)

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the stored images (before the variant)."""
        return self.store.shape

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        c, h, w = self.store.shape
        return (self.variant.channels if self.variant else c, h, w)

    def sample_factors(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        """n factor vectors, each factor uniform and independent: int64 (n, num_factors)."""
        # dlib draws rng.randint(size, size=n) per factor, in factor order. One call with the
        # sizes broadcast over (factors, n) draws the same numbers in the same order (numpy's
        # per-element masked rejection, as the per-factor calls; tests/test_datasets.py) in half
        # the time: BetaVAE and FactorVAE make ~50,000 such calls per evaluation.
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)[:, None]
        return np.ascontiguousarray(rng.randint(0, sizes, size=(len(sizes), n), dtype=np.int64).T)

    @abc.abstractmethod
    def rows_of(self, factors: np.ndarray, rng: np.random.RandomState | None = None) -> np.ndarray:
        """Dataset rows showing the given factor vectors (random where several do)."""

    @abc.abstractmethod
    def factors_of(self, rows: np.ndarray) -> np.ndarray:
        """Factor vectors (int64 (n, num_factors)) of dataset rows."""

    def images(self, rows: np.ndarray) -> np.ndarray:
        """Stored uint8 pixels (n, C, H, W) of the given rows."""
        return self.store.rows(np.asarray(rows, dtype=np.int64))

    def observations_of_rows(
        self, rows: np.ndarray, rng: np.random.RandomState | None = None
    ) -> np.ndarray:
        x = self.images(rows).astype(np.float32) * np.float32(1.0 / 255.0)
        if self.variant is not None:
            if rng is None:
                raise ValueError(
                    f"{self.name}: observations need a RandomState for the "
                    f"{self.variant.name} variant"
                )
            x = self.variant.apply(x, rng)
        return x

    def observations(
        self, factors: np.ndarray, rng: np.random.RandomState | None = None
    ) -> np.ndarray:
        """float32 observations (n, C, H, W) in [0, 1] for factor vectors (dlib's
        ``sample_observations_from_factors``)."""
        factors = self.check_factors(factors)
        return self.observations_of_rows(self.rows_of(factors, rng), rng)

    def sample(self, n: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        factors = self.sample_factors(n, rng)
        return factors, self.observations(factors, rng)

    def check_factors(self, factors: np.ndarray) -> np.ndarray:
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(
                f"{self.name}: factors must have shape (n, {self.num_factors}), got {factors.shape}"
            )
        if factors.size and (factors.min() < 0 or np.any(factors.max(0) >= self.factor_sizes)):
            raise ValueError(
                f"{self.name}: factor values out of range for sizes {self.factor_sizes}"
            )
        return factors.astype(np.int64, copy=False)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "factor_names": list(self.factor_names),
            "factor_sizes": list(self.factor_sizes),
            "num_rows": self.num_rows,
            "stored_shape": list(self.stored_shape),
            "observation_shape": list(self.observation_shape),
            "binary": self.store.binary,
            "variant": self.variant.name if self.variant else None,
            "kind": "grid" if isinstance(self, GridDataset) else "labelled",
        }


class GridDataset(FactorDataset):
    """One image per factor combination.

    ``all_sizes`` are the sizes of every factor in the file's state space; ``latent`` the indices
    of those exposed as factors (the rest are nuisances, drawn at observation time in index
    order, as dlib's ``SplitDiscreteStateSpace``). ``lookup`` maps a state-space index (row-major
    over ``all_sizes``) to the dataset row when the file is stored in another order.
    """

    def __init__(
        self,
        name: str,
        factor_names: tuple[str, ...],
        store: ImageStore,
        all_sizes: tuple[int, ...],
        latent: tuple[int, ...] | None = None,
        lookup: np.ndarray | None = None,
        variant: Variant | None = None,
    ):
        self.name = name
        self.all_sizes = tuple(int(s) for s in all_sizes)
        self.latent = tuple(range(len(all_sizes))) if latent is None else tuple(latent)
        self.factor_sizes = tuple(self.all_sizes[i] for i in self.latent)
        self.factor_names = tuple(factor_names)
        if len(self.factor_names) != len(self.factor_sizes):
            raise ValueError(
                f"{name}: {len(factor_names)} names for {len(self.factor_sizes)} factors"
            )
        self.store = store
        self.variant = variant
        self.lookup = lookup
        self._strides = row_major_strides(self.all_sizes)
        expected = math.prod(self.all_sizes)
        if lookup is None and len(store) != expected:
            raise ValueError(f"{name}: {len(store)} images for a grid of {expected}")
        if lookup is not None and len(lookup) != expected:
            raise ValueError(f"{name}: lookup of {len(lookup)} entries for a grid of {expected}")

    @property
    def nuisance(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.all_sizes)) if i not in self.latent)

    def rows_of(self, factors: np.ndarray, rng: np.random.RandomState | None = None) -> np.ndarray:
        factors = np.asarray(factors, dtype=np.int64)
        if self.nuisance:
            if rng is None:
                raise ValueError(f"{self.name}: rows_of needs a RandomState for nuisance factors")
            full = np.empty((factors.shape[0], len(self.all_sizes)), dtype=np.int64)
            full[:, list(self.latent)] = factors
            for i in self.nuisance:
                full[:, i] = rng.randint(self.all_sizes[i], size=factors.shape[0])
        else:
            full = factors
        index = full @ self._strides
        return self.lookup[index] if self.lookup is not None else index

    def factors_of(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if self.lookup is not None:
            inverse = getattr(self, "_inverse", None)
            if inverse is None:
                inverse = np.empty_like(self.lookup)
                inverse[self.lookup] = np.arange(len(self.lookup))
                self._inverse = inverse
            rows = inverse[rows]
        full = (rows[:, None] // self._strides[None, :]) % np.asarray(self.all_sizes)[None, :]
        return full[:, list(self.latent)]


class LabelledDataset(FactorDataset):
    """Images with integer class labels; one factor, the class."""

    def __init__(
        self,
        name: str,
        store: ImageStore,
        labels: np.ndarray,
        num_classes: int,
        factor_name: str = "digit",
    ):
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(store):
            raise ValueError(f"{name}: {len(labels)} labels for {len(store)} images")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name}: labels outside 0..{num_classes - 1}")
        self.name = name
        self.store = store
        self.labels = labels
        self.factor_names = (factor_name,)
        self.factor_sizes = (int(num_classes),)
        self._order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=num_classes)
        self._counts = counts
        self._offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def rows_of(self, factors: np.ndarray, rng: np.random.RandomState | None = None) -> np.ndarray:
        cls = np.asarray(factors, dtype=np.int64)[:, 0]
        if np.any(self._counts[cls] == 0):
            missing = sorted(set(cls[self._counts[cls] == 0].tolist()))
            raise ValueError(f"{self.name}: no image of class {missing}")
        if rng is None:
            raise ValueError(f"{self.name}: rows_of needs a RandomState (several images per class)")
        pick = rng.randint(0, self._counts[cls])
        return self._order[self._offsets[cls] + pick]

    def factors_of(self, rows: np.ndarray) -> np.ndarray:
        return self.labels[np.asarray(rows, dtype=np.int64)][:, None]
