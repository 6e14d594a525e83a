"""Ground truths with known answers, for tests and benchmarks of the metrics.

:func:`factor_image_dataset` is a grid dataset whose "images" are the factor values themselves
(one row of F pixels, pixel j = value of factor j). A representation function can then recover
the factors from exactly the observations a metric sampled, so a "perfect code" is real: any
sampling bug (wrong rows, misaligned batches) shows up as a lower score.

:class:`SyntheticCode` maps those observations to codes: a linear map of the normalised factors
(identity = perfectly disentangled; a rotation = mixed; scaled or permuted columns), plus noise
dimensions that are a fixed random function of the dataset row (deterministic, so fast mode's
row cache is valid, and independent of the factors). :func:`random_code` has only such noise.

:class:`MomentsCode` is a cheap hand-made representation of real dSprites images (image
moments: centroid, size, orientation), used by the speed benchmark so that rendering / unpacking
images is part of the measured time.
"""

from __future__ import annotations

import math

import numpy as np

from ..data.base import GridDataset, row_major_strides
from ..data.store import DenseStore


def factor_image_dataset(
    sizes: tuple[int, ...], names: tuple[str, ...] | None = None, name: str = "factor_grid"
) -> GridDataset:
    """Grid dataset of all factor combinations; the image of a row is (1, 1, F) uint8 holding
    its factor values (every size must be <= 256)."""
    sizes = tuple(int(s) for s in sizes)
    if max(sizes) > 256:
        raise ValueError("factor_image_dataset stores values as uint8: sizes must be <= 256")
    n = math.prod(sizes)
    rows = np.arange(n, dtype=np.int64)
    strides = row_major_strides(sizes)
    factors = (rows[:, None] // strides[None, :]) % np.asarray(sizes)[None, :]
    images = factors.astype(np.uint8)[:, None, None, :]
    names = names or tuple(f"f{j}" for j in range(len(sizes)))
    return GridDataset(name, names, DenseStore(images), sizes)


def factors_from_observations(x: np.ndarray) -> np.ndarray:
    """Invert :func:`factor_image_dataset`: observations (float32 in [0, 1] or uint8) -> factors."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x[:, 0, 0, :].astype(np.int64)
    return np.rint(x[:, 0, 0, :].astype(np.float64) * 255.0).astype(np.int64)


class SyntheticCode:
    """codes = (factors / (size - 1)) @ matrix, then ``noise_dims`` columns of N(0, 1) noise that
    are a fixed function of the dataset row (seeded), times ``noise_scale``."""

    accepts_uint8 = True

    def __init__(
        self,
        sizes: tuple[int, ...],
        matrix: np.ndarray | None = None,
        noise_dims: int = 0,
        noise_scale: float = 1.0,
        seed: int = 0,
        dtype: type = np.float64,
    ):
        self.sizes = np.asarray(sizes, dtype=np.int64)
        f = len(sizes)
        self.matrix = np.eye(f) if matrix is None else np.asarray(matrix, dtype=np.float64)
        if self.matrix.shape[0] != f:
            raise ValueError(f"matrix must have {f} rows (one per factor)")
        self.noise_dims = noise_dims
        self.noise_scale = noise_scale
        self.seed = seed
        self.dtype = dtype
        self._strides = row_major_strides(tuple(sizes))
        self._noise: np.ndarray | None = None
        if noise_dims:
            n = int(np.prod(self.sizes))
            self._noise = np.random.default_rng(seed).standard_normal((n, noise_dims))

    @property
    def dim(self) -> int:
        return self.matrix.shape[1] + self.noise_dims

    def __call__(self, x: np.ndarray) -> np.ndarray:
        factors = factors_from_observations(x)
        norm = factors / np.maximum(self.sizes - 1, 1)
        codes = norm @ self.matrix
        if self._noise is not None:
            rows = factors @ self._strides
            codes = np.concatenate([codes, self.noise_scale * self._noise[rows]], axis=1)
        return codes.astype(self.dtype)


def perfect_code(sizes: tuple[int, ...], **kw) -> SyntheticCode:
    """One code dimension per factor, equal to the normalised factor."""
    return SyntheticCode(sizes, **kw)


def mixed_code(sizes: tuple[int, ...], mix: float = 0.5, seed: int = 0, **kw) -> SyntheticCode:
    """A perfectly disentangled code rotated towards a random orthogonal basis:
    matrix = (1 - mix) I + mix Q; mix=0 is perfect, mix=1 a random rotation."""
    f = len(sizes)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((f, f)))
    return SyntheticCode(sizes, (1 - mix) * np.eye(f) + mix * q, seed=seed, **kw)


class MixtureCode:
    """An entangled code: a near-perfect code (the normalised factors, plus ``noise_dims``
    columns of row-fixed N(0, 1) noise times ``noise_scale``) through a random square mixing
    matrix with N(0, 1) entries (seed ``seed``). Every code dimension carries every factor, and
    its values are all distinct, so boosted trees choose among thousands of thresholds."""

    accepts_uint8 = True

    def __init__(self, sizes: tuple[int, ...], seed: int = 0, noise_dims: int = 5, noise_scale=0.1):
        self.base = perfect_code(sizes, noise_dims=noise_dims, noise_scale=noise_scale, seed=seed)
        d = len(sizes) + noise_dims
        self.matrix = np.random.default_rng(seed + 1000).standard_normal((d, d))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.base(x) @ self.matrix


def random_code(sizes: tuple[int, ...], dim: int = 10, seed: int = 0) -> SyntheticCode:
    """Codes independent of the factors (a fixed random vector per dataset row)."""
    return SyntheticCode(sizes, np.zeros((len(sizes), 0)), noise_dims=dim, seed=seed)


class MomentsCode:
    """A hand-made 10-dimensional representation of single-sprite images (dSprites): centroid
    x / y, square root of the mass, orientation of the second moments (as anisotropy-weighted
    cos / sin of twice the angle), two third-order moments, and three fixed random projections
    of the pixels. Accepts uint8 images (fast path) or float32 in [0, 1]."""

    accepts_uint8 = True

    def __init__(self, size: int = 64, seed: int = 0):
        coords = np.arange(size, dtype=np.float64) + 0.5
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        proj = np.random.default_rng(seed).standard_normal((3, size * size)) / size
        self.basis = np.concatenate(
            [
                np.stack(
                    [np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy, xx**3, yy**3]
                ).reshape(8, -1),
                proj,
            ]
        ).T.astype(np.float32)
        self.basis_uint8 = self.basis * np.float32(1 / 255)
        self.size = size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        flat = x[:, 0].reshape(len(x), -1).astype(np.float32)
        # uint8 pixels: the 1/255 folded into the basis (one pass over the pixels less).
        basis = self.basis_uint8 if x.dtype == np.uint8 else self.basis
        mom = (flat @ basis).astype(np.float64)
        m = np.maximum(mom[:, 0], 1e-6)
        cx, cy = mom[:, 1] / m, mom[:, 2] / m
        mu20 = mom[:, 3] / m - cx**2
        mu02 = mom[:, 4] / m - cy**2
        mu11 = mom[:, 5] / m - cx * cy
        skew_x = mom[:, 6] / m - 3 * cx * mu20 - cx**3
        skew_y = mom[:, 7] / m - 3 * cy * mu02 - cy**3
        s = self.size
        out = np.stack(
            [
                cx / s,
                cy / s,
                np.sqrt(m) / s,
                (mu20 - mu02) / s**2,
                2 * mu11 / s**2,
                skew_x / s**3,
                skew_y / s**3,
                *mom[:, 8:].T,
            ],
            axis=1,
        )
        return out.astype(np.float32)


def expected_perfect_mig(sizes: tuple[int, ...], num_bins: int = 20) -> float:
    """MIG of :func:`perfect_code` in the large-sample limit (uniform factors, all values
    drawn): for each factor, H(histogram bins of its normalised values) / H(values). A factor
    with at most ``num_bins`` values is recovered exactly (1); with more, values share bins and
    the ratio is about log(num_bins) / log(k)."""
    ratios = []
    for k in sizes:
        if k < 2:
            continue
        values = np.arange(k) / (k - 1)
        bins = np.digitize(values, np.histogram(values, num_bins)[1][:-1])
        p = np.bincount(bins)[1:] / k
        p = p[p > 0]
        ratios.append(float(-(p * np.log(p)).sum() / math.log(k)))
    return float(np.mean(ratios))


class PrecomputedCode:
    """Codes looked up by dataset row from a table (num_rows, D), for a
    :func:`factor_image_dataset` of the same factor sizes: evaluates a representation whose
    codes of every row were computed once (e.g. a trained encoder on the real images) at the cost
    of a table lookup, with exactly the sampling of the real dataset."""

    accepts_uint8 = True

    def __init__(self, sizes: tuple[int, ...], table: np.ndarray):
        if len(table) != math.prod(sizes):
            raise ValueError(f"table has {len(table)} rows for a grid of {math.prod(sizes)}")
        self.table = table
        self._strides = row_major_strides(tuple(sizes))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.table[factors_from_observations(x) @ self._strides]
