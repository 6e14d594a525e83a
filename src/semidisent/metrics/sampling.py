"""Turning sampled factors into codes, in disentanglement_lib's RandomState call order.

Every metric wrapper draws factors exactly as dlib does (same calls, same sizes, same order on
one ``np.random.RandomState``) and hands each batch to a :class:`Sampler`; after the last batch,
``codes()`` returns the codes of all batches in order. The two samplers differ only in *how*
codes are obtained, never in which factors are drawn, so both modes see the same data:

- :class:`ReferenceSampler` renders each batch and calls the representation function on it
  right away, with dlib's batch sizes (16 for the ``generate_batch_factor_code`` metrics, 64
  for BetaVAE / FactorVAE);
- :class:`FastSampler` only records dataset rows (drawing nuisance factors in order) and asks
  the shared :class:`CodeCache` for the codes of all rows at the end, in large batches. With an
  observation-time variant (noisy / colour dSprites) observations are not a function of the row:
  it renders each batch in order (consuming the variant's random draws exactly as dlib) and
  calls the function on large accumulated batches instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.base import GridDataset
from .representation import CodeCache, RepresentationFunction, as_cache, check_codes
from .utils import Mode


class Sampler:
    """Collects batches of factors; ``codes()`` gives their codes (rows in request order)."""

    def __init__(self, dataset: Any, rng: np.random.RandomState, metric: str, progress: bool):
        self.dataset = dataset
        self.rng = rng
        self.metric = metric
        self.total = 0
        self._bar = None
        self._progress = progress

    def expect(self, n_images: int) -> None:
        """Announce how many observations will be requested (for the progress bar)."""
        if self._progress and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=n_images, desc=f"{self.metric}: sampling", unit="img", leave=False
            )

    def _tick(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def add(self, factors: np.ndarray, fn_batch: int | None = None) -> None:
        raise NotImplementedError

    def codes(self) -> np.ndarray:
        raise NotImplementedError


class ReferenceSampler(Sampler):
    def __init__(self, dataset, rng, metric, progress, fn: RepresentationFunction):
        super().__init__(dataset, rng, metric, progress)
        self.fn = fn
        self._chunks: list[np.ndarray] = []
        self._dim: int | None = None

    def add(self, factors: np.ndarray, fn_batch: int | None = None) -> None:
        obs = self.dataset.observations(factors, self.rng)
        step = fn_batch or len(obs)
        for start in range(0, len(obs), step):
            x = obs[start : start + step]
            codes = check_codes(self.fn(x), len(x), self.metric, self._dim)
            self._dim = codes.shape[1]
            self._chunks.append(codes)
        self.total += len(factors)
        self._tick(len(factors))

    def codes(self) -> np.ndarray:
        self._close()
        if not self._chunks:
            return np.zeros((0, self._dim or 0))
        out = np.concatenate(self._chunks)
        self._chunks = [out]
        return out


class FastSampler(Sampler):
    def __init__(self, dataset, rng, metric, progress, cache: CodeCache, batch_size: int = 4096):
        super().__init__(dataset, rng, metric, progress)
        self.cache = cache
        self.batch_size = batch_size
        self._rows: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._chunks: list[np.ndarray] = []
        self._dim: int | None = None
        # A grid without nuisance factors draws nothing in rows_of: map all factors at once.
        self._deferred = (
            self.cache.usable and isinstance(dataset, GridDataset) and not dataset.nuisance
        )
        self._factors: list[np.ndarray] = []

    def add(self, factors: np.ndarray, fn_batch: int | None = None) -> None:
        if self._deferred:  # rows are a pure function of the factors: one product at the end
            self._factors.append(factors)
            self.total += len(factors)
            self._tick(len(factors))
            return
        rows = self.dataset.rows_of(factors, self.rng)  # nuisance draws, in dlib's order
        if self.cache.usable:
            self._rows.append(rows)
        else:
            self._pending.append(self.dataset.observations_of_rows(rows, self.rng))
            self._pending_n += len(rows)
            if self._pending_n >= self.batch_size:
                self._flush()
        self.total += len(factors)
        self._tick(len(factors))

    def _flush(self) -> None:
        if not self._pending:
            return
        x = np.concatenate(self._pending)
        self._pending, self._pending_n = [], 0
        codes = check_codes(self.cache.fn(x), len(x), self.metric, self._dim)
        self._dim = codes.shape[1]
        self._chunks.append(codes)

    def codes(self) -> np.ndarray:
        self._close()
        if self._factors:
            self._rows.append(self.dataset.rows_of(np.concatenate(self._factors)))
            self._factors = []
        if self.cache.usable:
            rows = np.concatenate(self._rows) if self._rows else np.zeros(0, np.int64)
            self._rows = [rows]
            return self.cache.codes_of_rows(rows, self.metric)
        self._flush()
        if not self._chunks:
            return np.zeros((0, self._dim or 0))
        return np.concatenate(self._chunks)


def make_sampler(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    rng: np.random.RandomState,
    metric: str,
    mode: Mode,
    progress: bool = False,
) -> Sampler:
    if mode == "reference":
        fn = representation.fn if isinstance(representation, CodeCache) else representation
        return ReferenceSampler(dataset, rng, metric, progress, fn)
    return FastSampler(dataset, rng, metric, progress, as_cache(dataset, representation, progress))


def sample_factor_codes(sampler: Sampler, num_points: int, batch_size: int) -> np.ndarray:
    """dlib's ``generate_batch_factor_code`` sampling: factors drawn in chunks of batch_size,
    each chunk's observations right after its factors. Returns the factors (num_points, F);
    the codes come from ``sampler.codes()`` once every request is in."""
    dataset, rng = sampler.dataset, sampler.rng
    out = []
    i = 0
    while i < num_points:
        n = min(num_points - i, batch_size)
        f = dataset.sample_factors(n, rng)
        sampler.add(f)
        out.append(f)
        i += n
    if not out:
        return np.zeros((0, dataset.num_factors), np.int64)
    return np.concatenate(out)


def factor_codes(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    rng: np.random.RandomState,
    sets: list[int],
    batch_size: int,
    metric: str,
    mode: Mode,
    progress: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive ``generate_batch_factor_code`` calls (e.g. train then test) on one
    RandomState: [(codes, factors), ...] with (num_points, D) and (num_points, F) arrays."""
    sampler = make_sampler(dataset, representation, rng, metric, mode, progress)
    sampler.expect(sum(sets))
    factors = [sample_factor_codes(sampler, n, batch_size) for n in sets]
    codes = sampler.codes()
    out = []
    start = 0
    for f in factors:
        out.append((codes[start : start + len(f)], f))
        start += len(f)
    return out
