"""Where a dataset's pixels live: dense uint8 rows, or bit-packed rows for binary images.

Binary images (dSprites) are kept bit-packed, 8 pixels a byte along the width: the full
737,280-image grid is 377 MB instead of 3 GB, in memory, on disk and on a GPU. Rows are
unpacked only when asked for. Both stores accept numpy memmaps, so a prepared artifact can be
opened without reading it.
"""

from __future__ import annotations

import abc

import numpy as np


class ImageStore(abc.ABC):
    """Rows of uint8 images, shape (C, H, W), values 0..255."""

    shape: tuple[int, int, int]
    binary: bool

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def rows(self, index: np.ndarray) -> np.ndarray:
        """uint8 array (len(index), C, H, W)."""

    @property
    @abc.abstractmethod
    def raw(self) -> np.ndarray:
        """The stored array (dense pixels or packed bits), for saving and device upload."""

    def chunk(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop in the stored layout (packed bits for binary stores)."""
        return np.asarray(self.raw[start:stop])


class DenseStore(ImageStore):
    binary = False

    def __init__(self, images: np.ndarray):
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(
                f"DenseStore wants uint8 (N, C, H, W), got {images.dtype} {images.shape}"
            )
        self._images = images
        self.shape = tuple(images.shape[1:])  # type: ignore[assignment]

    def __len__(self) -> int:
        return self._images.shape[0]

    def rows(self, index: np.ndarray) -> np.ndarray:
        return np.asarray(self._images[np.asarray(index)])

    @property
    def raw(self) -> np.ndarray:
        return self._images


def pack_binary(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) images, pixel on where > 0 -> (N, C, H, ceil(W/8)) packed bits (big-endian)."""
    return np.packbits(images > 0, axis=-1)


def unpack_binary(packed: np.ndarray, width: int) -> np.ndarray:
    """Inverse of :func:`pack_binary`: uint8 pixels 0 or 255."""
    bits = np.unpackbits(packed, axis=-1, count=width)
    return bits * np.uint8(255)


class PackedStore(ImageStore):
    binary = True

    def __init__(self, packed: np.ndarray, shape: tuple[int, int, int]):
        c, h, w = shape
        if packed.ndim != 4 or packed.shape[1:] != (c, h, (w + 7) // 8) or packed.dtype != np.uint8:
            raise ValueError(
                f"packed bits of shape (N, {c}, {h}, {(w + 7) // 8}) expected, "
                f"got {packed.dtype} {packed.shape}"
            )
        self._packed = packed
        self.shape = (c, h, w)

    @classmethod
    def from_images(cls, images: np.ndarray) -> PackedStore:
        return cls(pack_binary(images), tuple(images.shape[1:]))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._packed.shape[0]

    def rows(self, index: np.ndarray) -> np.ndarray:
        return unpack_binary(np.asarray(self._packed[np.asarray(index)]), self.shape[2])

    @property
    def raw(self) -> np.ndarray:
        return self._packed
