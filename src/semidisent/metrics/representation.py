"""The representation-function contract, its checks, a VAE wrapper and the fast-mode code cache.

Contract (as disentanglement_lib's ``representation_function``): ``fn(x)`` takes float32
observations (n, C, H, W) in [0, 1] and returns codes (n, D) as a numpy array; D is fixed.
Every call is checked; a bad answer (NaN, wrong rank, wrong number of rows, a changing D) raises
:class:`RepresentationError` naming the metric, which the CLI prints as one line.

A callable may set ``accepts_uint8 = True`` to receive the stored uint8 pixels (0..255)
instead: the fast path then skips a float conversion on the host (the VAE wrapper converts on
its device, to bit-identical float32 values).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import SemidisentError

RepresentationFunction = Callable[[np.ndarray], np.ndarray]


class RepresentationError(SemidisentError):
    """The representation function returned something a metric cannot use."""


def check_codes(
    codes: Any, n: int, metric: str, dim: int | None = None, where: str = ""
) -> np.ndarray:
    """Validate one answer of a representation function for ``n`` observations."""
    if hasattr(codes, "detach") and hasattr(codes, "cpu"):  # a torch tensor
        codes = codes.detach().cpu().numpy()
    try:
        codes = np.asarray(codes)
    except Exception as e:  # arbitrary objects: say what came back
        raise RepresentationError(
            f"metric {metric}: the representation function returned {type(codes).__name__}, "
            f"not an array ({e})"
        ) from None
    context = f" ({where})" if where else ""
    if codes.dtype.kind not in "fiub":
        raise RepresentationError(
            f"metric {metric}: the representation function returned dtype {codes.dtype}{context}; "
            "expected numbers"
        )
    if codes.ndim != 2:
        raise RepresentationError(
            f"metric {metric}: the representation function returned shape {codes.shape} for "
            f"{n} observations{context}; expected ({n}, num_codes)"
        )
    if codes.shape[0] != n:
        raise RepresentationError(
            f"metric {metric}: the representation function returned {codes.shape[0]} rows for "
            f"{n} observations{context}; expected one code per observation"
        )
    if dim is not None and codes.shape[1] != dim:
        raise RepresentationError(
            f"metric {metric}: the representation function returned {codes.shape[1]} dimensions "
            f"after returning {dim}{context}; the code size must be fixed"
        )
    if codes.shape[1] == 0:
        raise RepresentationError(f"metric {metric}: the representation function returned 0 dims")
    if codes.dtype.kind == "f" and not np.all(np.isfinite(codes)):
        bad = int((~np.isfinite(codes)).any(axis=1).sum())
        raise RepresentationError(
            f"metric {metric}: the representation function returned NaN or infinite codes for "
            f"{bad} of {n} observations{context}"
        )
    if codes.dtype.kind != "f":
        codes = codes.astype(np.float64)
    return codes


class VAERepresentation:
    """The encoder mean of a VAE as a representation function: batched, on a device, no grad.

    Accepts float32 in [0, 1] or (``accepts_uint8``) uint8 pixels; returns float32 (n, D).
    """

    accepts_uint8 = True

    def __init__(
        self, model: Any, device: str = "auto", batch_size: int = 1024, threads: int | None = None
    ):
        import torch

        from .utils import resolve_device

        self.device = torch.device(resolve_device(device))
        self.model = model.to(self.device).eval()
        self.batch_size = int(batch_size)
        # The encoder's convolutions use the threads torch had when it was wrapped, even inside
        # a metric that limits its own estimators to fewer.
        self.threads = torch.get_num_threads() if threads is None else threads

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        from .utils import torch_threads

        x = np.asarray(x)
        out = []
        with torch.inference_mode(), torch_threads(self.threads):
            for start in range(0, len(x), self.batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + self.batch_size]))
                chunk = chunk.to(self.device, non_blocking=True)
                if chunk.dtype == torch.uint8:
                    # float32(v) * float32(1/255): the same values as FactorDataset.observations.
                    chunk = chunk.float() * torch.tensor(1.0 / 255.0, dtype=torch.float32)
                mean = self.model.encode(chunk.float())[0]
                out.append(mean.float().cpu())
        if not out:
            return np.zeros((0, self.model.num_latent), np.float32)
        return torch.cat(out).numpy()


def vae_representation(
    model: Any, device: str = "auto", batch_size: int = 1024
) -> VAERepresentation:
    """Wrap a :class:`semidisent.models.VAE` (encoder mean) into a representation function."""
    return VAERepresentation(model, device=device, batch_size=batch_size)


class CodeCache:
    """Codes of dataset rows, computed once per row and shared by every metric of a run.

    Used by fast mode when observations are a function of the dataset row (no observation-time
    variant): disentanglement_lib's BetaVAE and FactorVAE sampling alone draws ~2.9 million
    images from dSprites' 737,280 rows, so computing each row once does ~4x less encoder work
    with identical codes. It assumes a deterministic representation (the encoder mean).
    """

    def __init__(
        self,
        dataset: Any,
        fn: RepresentationFunction,
        batch_size: int = 4096,
        progress: bool = False,
    ):
        self.dataset = dataset
        self.fn = fn
        self.batch_size = int(batch_size)
        self.progress = progress
        self._codes: np.ndarray | None = None
        self._filled: np.ndarray | None = None
        self.rows_computed = 0

    @property
    def usable(self) -> bool:
        return getattr(self.dataset, "variant", None) is None

    def _compute(self, rows: np.ndarray, metric: str) -> np.ndarray:
        if getattr(self.fn, "accepts_uint8", False):
            x = self.dataset.images(rows)
        else:
            x = self.dataset.observations_of_rows(rows)
        dim = None if self._codes is None else self._codes.shape[1]
        return check_codes(self.fn(x), len(rows), metric, dim)

    def codes_of_rows(self, rows: np.ndarray, metric: str) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if self._filled is None:
            self._filled = np.zeros(self.dataset.num_rows, dtype=bool)
        need = np.zeros(self.dataset.num_rows, dtype=bool)
        need[rows] = True
        need &= ~self._filled
        todo = np.flatnonzero(need)  # sorted: memory-mapped stores read forward
        bar = None
        if self.progress and len(todo) > self.batch_size:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"{metric}: codes", unit="img", leave=False)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            codes = self._compute(chunk, metric)
            if self._codes is None:
                self._codes = np.zeros((self.dataset.num_rows, codes.shape[1]), codes.dtype)
            self._codes[chunk] = codes
            self._filled[chunk] = True
            self.rows_computed += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        if self._codes is None:  # nothing requested yet and nothing to compute
            return np.zeros((0, 0))
        return self._codes[rows]


def as_cache(
    dataset: Any, representation: RepresentationFunction | CodeCache, progress: bool = False
) -> CodeCache:
    """The run's shared cache if one is given, else a fresh one for this metric call."""
    if isinstance(representation, CodeCache):
        if representation.dataset is not dataset:
            raise ValueError("the CodeCache was built for another dataset")
        return representation
    return CodeCache(dataset, representation, progress=progress)


def plain_function(representation: RepresentationFunction | CodeCache) -> RepresentationFunction:
    return representation.fn if isinstance(representation, CodeCache) else representation
