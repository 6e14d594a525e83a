"""What every metric's settings share: the mode, the device of fast mode, progress bars, and how
study sample sizes are scaled (``eval.sample_scale``)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..backends import ieee_float32
from .utils import Mode, keep_heap, limit_threads

F = TypeVar("F", bound=Callable[..., Any])

MIN_SCALED_SIZE = 2


@dataclass(frozen=True)
class MetricSettings:
    # "reference": disentanglement_lib's estimators (scikit-learn); "fast": batched torch / numpy
    # estimators of the same quantities. Both sample exactly the same data.
    mode: Mode = "reference"
    # Torch device of fast mode ("cpu", "cuda", "cuda:1", ...).
    device: str = "cpu"
    # CPU threads (torch, OpenMP, BLAS) while a metric runs through the registry (0: as is).
    threads: int = 1
    # Independent estimator problems solved at the same time (DCI's boosted trees), each in its
    # own Python thread on one torch thread; scores move by float rounding at most (0: one per
    # CPU core).
    workers: int = 0
    progress: bool = False

    # Fields holding sample sizes (ints or tuples of ints), multiplied by ``scaled``.
    SCALED: ClassVar[tuple[str, ...]] = ()
    # Smallest scaled size (the estimators need a few samples, cross-validation 5 folds).
    MIN_SIZE: ClassVar[int] = MIN_SCALED_SIZE

    def scaled(self, scale: float) -> Any:
        """A copy with every study sample size multiplied by ``scale`` (at least MIN_SIZE)."""
        if scale == 1.0:
            return self

        def one(v: int) -> int:
            return max(self.MIN_SIZE, round(v * scale))

        changes: dict[str, Any] = {}
        for name in self.SCALED:
            v = getattr(self, name)
            changes[name] = tuple(one(x) for x in v) if isinstance(v, tuple) else one(v)
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """The settings as plain values, for metrics_meta.json."""
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()
            if k != "progress"
        }


def thread_limited(fn: F) -> F:
    """Run a metric's compute function under ``limit_threads(settings.threads)`` (the default
    settings' value when none are given), ``keep_heap()`` and IEEE float32 kernels (no TF32,
    no cuDNN autotuning, whatever training in the same process switched on:
    :mod:`semidisent.backends`), whoever calls it."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = signature.bind(*args, **kwargs).arguments.get("settings")
        threads = settings.threads if settings is not None else MetricSettings.threads
        with limit_threads(threads), keep_heap(), ieee_float32():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
