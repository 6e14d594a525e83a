"""TF32 and cuDNN autotuning are scoped: training's fast path sets them for its own steps only,
and the metric estimators always compute in IEEE float32 (semidisent.backends)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from semidisent.backends import backend_flags, fast_training_kernels, ieee_float32
from semidisent.metrics.mig import MIGSettings, compute_mig
from semidisent.metrics.testing import factor_image_dataset, perfect_code

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _flags() -> tuple[bool, bool, bool]:
    return (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )


@pytest.fixture
def restore_flags():
    saved = _flags()
    yield
    (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    ) = saved


def test_contexts_set_and_restore_the_flags(restore_flags):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions
    torch.backends.cudnn.benchmark = False
    with fast_training_kernels():
        assert _flags() == (True, True, True)
        assert torch.get_float32_matmul_precision() == "high"
        with ieee_float32():
            assert _flags() == (False, False, False)
            assert torch.get_float32_matmul_precision() == "highest"
        assert _flags() == (True, True, True)
    assert _flags() == (False, True, False)
    with pytest.raises(RuntimeError), backend_flags(tf32=True, cudnn_benchmark=True):
        raise RuntimeError("restored on errors too")
    assert _flags() == (False, True, False)


def test_metrics_run_in_ieee_float32_whatever_training_left_on(restore_flags):
    """A search evaluates its trials in the training process: even with TF32 and autotuning
    left on, the representation function and the estimators see IEEE float32, and the caller's
    settings are back afterwards."""
    sizes = (3, 4, 5)
    seen = []
    code = perfect_code(sizes)

    def representation(x: np.ndarray) -> np.ndarray:
        seen.append(_flags())
        return code(x)

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    settings = dataclasses.replace(MIGSettings(mode="fast"), num_train=200)
    compute_mig(factor_image_dataset(sizes), representation, 0, settings)
    assert seen and set(seen) == {(False, False, False)}
    assert _flags() == (True, True, True)


@gpu
def test_fast_training_leaves_the_process_settings_as_they_were(small_prepared, restore_flags):
    from semidisent.artifacts.prepared import load_prepared
    from semidisent.config import load_params
    from semidisent.training import train

    path, overrides = small_prepared
    params = load_params(None, [*overrides, "train.steps=4", "train.device=cuda"])
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    result = train(load_prepared(path, params), params.train, params.model, progress=False)
    assert result.stats["fast_path"]
    assert _flags() == (False, False, False)
