"""Process-wide numeric settings of PyTorch, switched only for the code that wants them.

TF32 (10-bit mantissa matmuls and convolutions on NVIDIA GPUs) and cuDNN autotuning make the
training step faster and are harmless there; a metric estimator that ran after them in the same
process (a search evaluates its trials in the training process) would inherit them: DCI's split
gains computed with TF32 GEMMs, encoder codes that depend on the autotuned algorithm, and a
``val_dci`` that differs from a fresh ``semidisent evaluate``. So training turns them on inside
:func:`fast_training_kernels` and the metrics run inside :func:`ieee_float32`; both restore the
previous settings on exit. (cuDNN's own ``allow_tf32`` is True by default in PyTorch, so IEEE
float32 has to be asked for explicitly.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch

_Flags = tuple[bool, bool, bool]


def _read() -> _Flags:
    return (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )


def _write(flags: _Flags) -> None:
    matmul, conv, benchmark = flags
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = conv
    torch.backends.cudnn.benchmark = benchmark


@contextmanager
def backend_flags(*, tf32: bool, cudnn_benchmark: bool) -> Iterator[None]:
    """TF32 for matmuls and convolutions, and cuDNN autotuning, set for the block only."""
    saved = _read()
    _write((tf32, tf32, cudnn_benchmark))
    try:
        yield
    finally:
        _write(saved)


def fast_training_kernels() -> AbstractContextManager[None]:
    """The training fast path's settings: TF32 on, cuDNN autotuning on."""
    return backend_flags(tf32=True, cudnn_benchmark=True)


def ieee_float32() -> AbstractContextManager[None]:
    """The metric estimators' settings: IEEE float32 everywhere, no autotuning (deterministic
    algorithm choice)."""
    return backend_flags(tf32=False, cudnn_benchmark=False)
