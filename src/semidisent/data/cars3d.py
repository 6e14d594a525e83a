"""Cars3D from the official folder of ``*_mesh.mat`` files (``im``: 128x128x3x24x4 per car).

As in disentanglement_lib: per file, images ordered azimuth-major (elevation = k % 4,
azimuth = k // 4), each shrunk to 64 x 64 with PIL ``thumbnail`` (Lanczos). Deviation: the car
index follows the sorted file names, where dlib used the unsorted directory listing (so its
object index depended on the file system).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .base import GridDataset
from .catalog import CATALOG
from .files import reading, require_file
from .store import DenseStore


def _load_mesh(path) -> tuple[np.ndarray, int, int]:
    import scipy.io
    from PIL import Image

    with reading(path, "Cars3D mesh"):
        im = scipy.io.loadmat(path)["im"]
    if im.ndim != 5 or im.shape[2] != 3:
        raise DataError(f"Cars3D mesh: {path} has im of shape {im.shape}; expected (H, W, 3, A, E)")
    mesh = np.einsum("abcde->deabc", im)
    flat = mesh.reshape((-1, *mesh.shape[2:]))
    out = np.empty((len(flat), 3, 64, 64), dtype=np.uint8)
    for i, img in enumerate(flat):
        pic = Image.fromarray(np.ascontiguousarray(img))
        pic.thumbnail((64, 64), Image.Resampling.LANCZOS)
        arr = np.asarray(pic)
        if arr.shape[:2] != (64, 64):
            raise DataError(f"Cars3D mesh: {path} images are not square ({img.shape})")
        out[i] = arr.transpose(2, 0, 1)
    return out, mesh.shape[1], mesh.shape[0]


def build(name: str, path: str, progress: bool = False) -> GridDataset:
    root = require_file(path, "Cars3D folder")
    files = sorted(p for p in root.iterdir() if p.suffix == ".mat")
    if not files:
        raise DataError(f"Cars3D: {root} holds no .mat files")
    blocks = []
    shapes = set()
    for f in files:
        imgs, n_elev, n_azi = _load_mesh(f)
        # Rows k of a file: elevation k % n_elev, azimuth k // n_elev -> grid (elev, azi, car).
        blocks.append(imgs)
        shapes.add((n_elev, n_azi))
    if len(shapes) != 1:
        raise DataError(f"Cars3D: {root} files differ in their number of views {sorted(shapes)}")
    ((n_elev, n_azi),) = shapes
    n_car = len(files)
    data = np.stack(blocks)  # (car, azi * elev, ...)
    data = data.reshape(n_car, n_azi, n_elev, 3, 64, 64).transpose(2, 1, 0, 3, 4, 5)
    store = DenseStore(np.ascontiguousarray(data.reshape(-1, 3, 64, 64)))
    return GridDataset(name, CATALOG[name].factor_names, store, (n_elev, n_azi, n_car))
