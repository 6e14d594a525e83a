"""The prepared dataset artifact: what `semidisent prepare` writes and every later stage reads.

A directory (versioned by DVC) holding:

- ``images.npy``: every image of the dataset, bit-packed along the width for binary datasets
  (uint8 (N, C, H, ceil(W/8))), else uint8 (N, C, H, W); memory-mapped when read;
- ``factors.npy``: the factor vector of every row;
- ``lookup.npy`` when the file's row order is not the grid order, ``holdout.npy`` for datasets
  with an official test split (the grid itself is described in the manifest);
- ``supervision/*.npy``: the labelled pool (rows, split, labels, observed mask, label sizes);
- ``manifest.json``: dataset description, the parameters that made it, seeds, sizes, the sha256
  and size of every file, and the versions that produced it.

Every file is plain ``.npy`` so the bytes depend only on the content (zip-based ``.npz`` embeds
timestamps), which keeps the artifact's hashes reproducible.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config.schema import Params
from ..data.base import FactorDataset, GridDataset, LabelledDataset
from ..data.store import DenseStore, PackedStore
from ..data.variants import VARIANTS
from ..errors import ArtifactError
from ..supervision.mask import SupervisionMask
from .hashing import atomic_directory, sha256_file, write_json

FORMAT = "semidisent.prepared/1"
MASK_ARRAYS = ("rows", "is_validation", "labels", "observed", "label_sizes")
ROWS_PER_CHUNK = 16384


@dataclass
class Prepared:
    path: Path
    manifest: dict[str, Any]
    dataset: FactorDataset
    mask: SupervisionMask

    @property
    def data_hash(self) -> str:
        """One hash for the whole artifact (the hash of the manifest's file table)."""
        return self.manifest["content_sha256"]


def _smallest_int(max_value: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.int32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def _write_images(path: Path, dataset: FactorDataset) -> None:
    store = dataset.store
    n = len(store)
    first = store.chunk(0, min(n, 1))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, *first.shape[1:]))
    for start in range(0, n, ROWS_PER_CHUNK):
        stop = min(n, start + ROWS_PER_CHUNK)
        out[start:stop] = store.chunk(start, stop)
    out.flush()
    del out


def _factors_of_all(dataset: FactorDataset) -> np.ndarray:
    n = dataset.num_rows
    dtype = _smallest_int(max(dataset.factor_sizes) - 1)
    out = np.empty((n, dataset.num_factors), dtype=dtype)
    for start in range(0, n, 1 << 18):
        stop = min(n, start + (1 << 18))
        out[start:stop] = dataset.factors_of(np.arange(start, stop))
    return out


def write_prepared(
    out_dir: str | Path,
    dataset: FactorDataset,
    mask: SupervisionMask,
    params: Params,
    source: dict[str, Any],
) -> Path:
    """Write the artifact atomically: either the complete directory appears, or nothing."""
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        _write_images(tmp / "images.npy", dataset)
        np.save(tmp / "factors.npy", _factors_of_all(dataset))
        grid: dict[str, Any] | None = None
        if isinstance(dataset, GridDataset):
            grid = {"all_sizes": list(dataset.all_sizes), "latent": list(dataset.latent)}
            if dataset.lookup is not None:
                np.save(tmp / "lookup.npy", dataset.lookup)
        if getattr(dataset, "holdout", None) is not None:
            np.save(tmp / "holdout.npy", np.asarray(dataset.holdout, dtype=np.int64))
        (tmp / "supervision").mkdir()
        for name, arr in mask.arrays().items():
            np.save(tmp / "supervision" / f"{name}.npy", arr)
        files = {
            str(p.relative_to(tmp)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.rglob("*.npy"))
        }
        content = json.dumps(files, sort_keys=True).encode()
        manifest = {
            "format": FORMAT,
            "dataset": dataset.describe(),
            "grid": grid,
            "source": source,
            "params": {
                "data": params.section("data"),
                "supervision": params.section("supervision"),
            },
            "params_sha256": params.digest("data", "supervision"),
            "supervision": {
                **mask.meta,
                "label_sizes": list(mask.label_sizes),
                "n_train": int((~mask.is_validation).sum()),
                "mask_sha256": mask.digest(),
            },
            "files": files,
            "content_sha256": hashlib.sha256(content).hexdigest(),
            "versions": {
                "semidisent": __version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
        }
        write_json(tmp / "manifest.json", manifest)
    return out_dir


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    mpath = path / "manifest.json"
    if not mpath.exists():
        raise ArtifactError(
            f"{path} is not a prepared artifact (no manifest.json); run `semidisent prepare` first"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{mpath} is not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath} has format {manifest.get('format')!r}; expected {FORMAT}")
    return manifest


def verify_files(path: Path, manifest: dict[str, Any]) -> None:
    for name, entry in manifest["files"].items():
        p = path / name
        if not p.exists():
            raise ArtifactError(f"prepared artifact {path}: {name} is missing")
        if p.stat().st_size != entry["bytes"]:
            raise ArtifactError(
                f"prepared artifact {path}: {name} has {p.stat().st_size} bytes, "
                f"the manifest says {entry['bytes']} (truncated or replaced)"
            )
        digest = sha256_file(p)
        if digest != entry["sha256"]:
            raise ArtifactError(
                f"prepared artifact {path}: {name} has sha256 {digest[:12]}..., "
                f"the manifest says {entry['sha256'][:12]}... (corrupt or modified)"
            )


def check_params(path: Path, manifest: dict[str, Any], params: Params) -> None:
    """Refuse an artifact made with other data / supervision parameters than ``params``."""
    for section in ("data", "supervision"):
        made = manifest["params"][section]
        wanted = params.section(section)
        for key in sorted(set(made) | set(wanted)):
            if made.get(key) != wanted.get(key):
                raise ArtifactError(
                    f"prepared artifact {path} was made with {section}.{key} = {made.get(key)!r} "
                    f"but the parameters ask for {wanted.get(key)!r}; rerun `semidisent prepare` "
                    "(or `dvc repro`)"
                )


def load_prepared(path: str | Path, params: Params | None = None, verify: bool = True) -> Prepared:
    """Open an artifact (images memory-mapped). With ``verify`` every file's sha256 is checked;
    with ``params`` the artifact must have been made from the same data/supervision sections."""
    path = Path(path)
    manifest = read_manifest(path)
    if verify:
        verify_files(path, manifest)
    if params is not None:
        check_params(path, manifest, params)
    d = manifest["dataset"]
    try:
        images = np.load(path / "images.npy", mmap_mode="r")
        factors = np.load(path / "factors.npy")
        sup = {name: np.load(path / "supervision" / f"{name}.npy") for name in MASK_ARRAYS}
    except (OSError, ValueError) as e:
        raise ArtifactError(f"prepared artifact {path} cannot be read: {e}") from None
    shape = tuple(d["stored_shape"])
    store = PackedStore(images, shape) if d["binary"] else DenseStore(images)
    variant = VARIANTS[d["variant"]]() if d["variant"] else None
    if d["kind"] == "grid":
        grid = manifest["grid"]
        lookup = np.load(path / "lookup.npy") if (path / "lookup.npy").exists() else None
        dataset: FactorDataset = GridDataset(
            d["name"],
            tuple(d["factor_names"]),
            store,
            tuple(grid["all_sizes"]),
            tuple(grid["latent"]),
            lookup=lookup,
            variant=variant,
        )
    else:
        dataset = LabelledDataset(
            d["name"], store, factors[:, 0], d["factor_sizes"][0], d["factor_names"][0]
        )
    if (path / "holdout.npy").exists():
        dataset.holdout = np.load(path / "holdout.npy")
    if len(store) != d["num_rows"] or len(factors) != d["num_rows"]:
        raise ArtifactError(
            f"prepared artifact {path}: {len(store)} images, {len(factors)} factor "
            f"rows, the manifest says {d['num_rows']}"
        )
    mask = SupervisionMask(
        rows=sup["rows"],
        is_validation=sup["is_validation"],
        labels=sup["labels"],
        observed=sup["observed"],
        label_sizes=tuple(int(k) for k in sup["label_sizes"]),
        factor_names=tuple(d["factor_names"]),
        meta=dict(manifest["supervision"]),
    )
    return Prepared(path=path, manifest=manifest, dataset=dataset, mask=mask)
