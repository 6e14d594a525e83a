"""Small helpers shared by the official-file loaders: clear errors, NHWC sources, factor ranks."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..errors import DataError
from .store import ImageStore

T = TypeVar("T")


def require_file(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what}: {p} does not exist")
    return p


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Turn the many ways a truncated or foreign file fails into one DataError."""
    try:
        yield
    except DataError:
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        zipfile.BadZipFile,
    ) as e:
        raise DataError(
            f"{what}: {path} is truncated, corrupt or not in the expected format "
            f"({type(e).__name__}: {e})"
        ) from e


def load_npz_arrays(
    path: Path, what: str, keys: tuple[str, ...], **kwargs
) -> dict[str, np.ndarray]:
    with reading(path, what), np.load(path, **kwargs) as z:
        missing = [k for k in keys if k not in z.files]
        if missing:
            raise DataError(
                f"{what}: {path} has no array {missing[0]!r} (found: {', '.join(z.files)})"
            )
        return {k: z[k] for k in keys}


def factor_ranks(values: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Per column, map values to their rank among the column's distinct values.

    Official files label factors by value (hues, scales, raw azimuths); the grid wants indices.
    """
    values = np.asarray(values)
    ranks = np.empty(values.shape, dtype=np.int64)
    sizes = []
    for j in range(values.shape[1]):
        uniq, inv = np.unique(values[:, j], return_inverse=True)
        ranks[:, j] = inv.reshape(-1)
        sizes.append(len(uniq))
    return ranks, tuple(sizes)


class NHWCStore(ImageStore):
    """Dense uint8 rows stored NHWC (h5 datasets, npz arrays), served as (N, C, H, W).

    ``source`` may be an h5py dataset: rows are read in increasing order, as h5py requires.
    """

    binary = False

    def __init__(self, source, to_uint8: Callable[[np.ndarray], np.ndarray] | None = None):
        n, h, w, c = source.shape
        self._source = source
        self._to_uint8 = to_uint8
        self.shape = (c, h, w)
        self._n = n

    def __len__(self) -> int:
        return self._n

    def _convert(self, block: np.ndarray) -> np.ndarray:
        if self._to_uint8 is not None:
            block = self._to_uint8(block)
        return np.ascontiguousarray(np.asarray(block, dtype=np.uint8).transpose(0, 3, 1, 2))

    def rows(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        order = np.argsort(index, kind="stable")
        uniq, inverse = np.unique(index[order], return_inverse=True)
        block = self._convert(self._source[uniq] if len(uniq) else self._source[:0])
        out = np.empty((len(index), *self.shape), dtype=np.uint8)
        out[order] = block[inverse]
        return out

    def chunk(self, start: int, stop: int) -> np.ndarray:
        return self._convert(self._source[start:stop])

    @property
    def raw(self) -> np.ndarray:
        return self.chunk(0, self._n)
