"""dSprites and its colour / noisy variants: procedural (default) or the official npz."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import dsprites_render as render
from .base import GridDataset, row_major_strides
from .catalog import DSPRITES_FACTORS, DSPRITES_SIZES
from .files import load_npz_arrays, require_file
from .store import ImageStore, PackedStore, pack_binary
from .variants import ColorVariant, NoisyVariant, Variant

OFFICIAL_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
VARIANT_OF = {"dsprites": None, "color_dsprites": ColorVariant, "noisy_dsprites": NoisyVariant}


class ProceduralStore(ImageStore):
    """The procedural grid, rendered on demand; the full grid is rendered once when asked."""

    binary = True
    shape = (1, render.IMAGE_PX, render.IMAGE_PX)

    def __init__(self, progress: bool = False):
        self._strides = row_major_strides(DSPRITES_SIZES)
        self._packed: np.ndarray | None = None
        self._progress = progress

    def __len__(self) -> int:
        return math.prod(DSPRITES_SIZES)

    def _factors(self, index: np.ndarray) -> np.ndarray:
        return (index[:, None] // self._strides[None, :]) % np.asarray(DSPRITES_SIZES)[None, :]

    def rows(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        if self._packed is not None:
            return PackedStore(self._packed, self.shape).rows(index)
        return render.render_factors(self._factors(index))

    def chunk(self, start: int, stop: int) -> np.ndarray:
        if self._packed is not None:
            return self._packed[start:stop]
        return pack_binary(self.rows(np.arange(start, stop)))

    @property
    def raw(self) -> np.ndarray:
        if self._packed is None:
            self._packed = render.render_grid_packed(progress=self._progress)
        return self._packed


def load_official_npz(path: str | Path) -> tuple[PackedStore, tuple[int, ...]]:
    """The official npz: ``imgs`` (N, 64, 64) 0/1, ``latents_classes`` (N, 6), ``metadata``.

    Factor sizes come from the file's metadata (colour, the first, has one value and is dropped),
    and the rows must be in row-major order of those sizes, as the official file is.
    """
    what = "dSprites npz"
    p = require_file(path, what)
    arrays = load_npz_arrays(
        p, what, ("imgs", "latents_classes", "metadata"), allow_pickle=True, encoding="latin1"
    )
    imgs, classes = arrays["imgs"], np.asarray(arrays["latents_classes"])
    meta = arrays["metadata"]
    meta = meta.item() if isinstance(meta, np.ndarray) else meta
    try:
        sizes = tuple(int(s) for s in meta["latents_sizes"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{what}: {p} metadata has no latents_sizes ({e})") from None
    if len(sizes) != 6 or sizes[0] != 1:
        raise DataError(
            f"{what}: {p} latents_sizes {sizes} is not (1, shape, scale, orientation, posX, posY)"
        )
    n = math.prod(sizes)
    if imgs.ndim != 3 or imgs.shape[0] != n or classes.shape != (n, 6):
        raise DataError(
            f"{what}: {p} holds imgs {imgs.shape} and latents_classes {classes.shape} "
            f"for a grid of {n} images"
        )
    expected = classes[:, 1:] @ row_major_strides(sizes[1:])
    if not np.array_equal(expected, np.arange(n)):
        raise DataError(f"{what}: {p} rows are not in the official order (posY fastest)")
    store = PackedStore(pack_binary(imgs[:, None]), (1, imgs.shape[1], imgs.shape[2]))
    return store, sizes[1:]


def build(name: str, path: str | None, progress: bool = False) -> GridDataset:
    variant_cls = VARIANT_OF[name]
    variant: Variant | None = variant_cls() if variant_cls else None
    if path:
        store, sizes = load_official_npz(path)
    else:
        store, sizes = ProceduralStore(progress=progress), DSPRITES_SIZES
    return GridDataset(name, DSPRITES_FACTORS, store, sizes, variant=variant)
