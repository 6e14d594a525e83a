"""The building blocks of the metrics against scikit-learn / numpy: discretisation, mutual
information, entropy, logistic regression and linear SVM (the boosted trees:
test_metrics_gbt.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semidisent.metrics import utils
from semidisent.metrics.linear import fit_linear_svc_1d, fit_logistic, predict_linear_svc_1d


def test_histogram_discretize_matches_dlib_loop():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4)).astype(np.float32)
    x[:, 3] = 1.5  # a constant column: np.histogram uses (v - 0.5, v + 0.5)
    out = utils.histogram_discretize(x, 20)
    for i in range(4):
        ref = np.digitize(x[:, i], np.histogram(x[:, i], 20)[1][:-1])
        np.testing.assert_array_equal(out[:, i], ref)
    assert out.min() >= 1 and out.max() <= 20


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 60),
    p=st.integers(1, 3),
    q=st.integers(1, 3),
    ka=st.integers(1, 6),
    kb=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_fast_mutual_information_equals_sklearn(n, p, q, ka, kb, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, ka, size=(n, p))
    b = rng.integers(0, kb, size=(n, q)) * 7 - 3  # labels need not be 0..k-1
    np.testing.assert_allclose(
        utils.mutual_info_fast(a, b), utils.mutual_info_reference(a, b), atol=1e-12
    )
    np.testing.assert_allclose(
        utils.discrete_entropy(b, "fast"), utils.discrete_entropy(b, "reference"), atol=1e-12
    )


def test_split_and_normalize_follow_dlib():
    x = np.arange(20.0).reshape(10, 2)
    train, test = utils.split_train_test(x, 0.9)
    assert len(train) == 9 and len(test) == 1  # ceil(10 * 0.9)
    train, test = utils.split_train_test(x[:7], 0.9)
    assert len(train) == 7 and len(test) == 0  # ceil(6.3)
    z, _, _ = utils.normalize_data(np.c_[x[:, :1], np.ones(10)])
    assert np.allclose(z[:, 0].mean(), 0) and np.allclose(z[:, 0].std(), 1)
    assert np.all(z[:, 1] == 0)  # constant column: no division by zero


def test_keep_heap_serves_large_blocks_from_the_heap():
    """Inside keep_heap a 16 MiB block comes from the heap (and stays there when freed) instead
    of a fresh memory mapping; outside (glibc's defaults, a fresh process) it is mapped."""
    import subprocess
    import sys

    if utils._glibc() is None:
        pytest.skip("glibc only")
    script = """
import ctypes, numpy as np
from semidisent.metrics.utils import keep_heap, _glibc
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class M(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS.split()]
libc = _glibc(); libc.mallinfo2.restype = M
def mapped(block):
    before = libc.mallinfo2().hblkhd
    with block():
        a = np.ones(2 << 20); during = libc.mallinfo2().hblkhd; del a
    return during - before
import contextlib
print(mapped(contextlib.nullcontext), mapped(keep_heap))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    outside, inside = int(out[0]), int(out[1])
    assert outside >= 16 << 20
    assert inside == 0


@pytest.mark.parametrize("k", [2, 5])
def test_fast_logistic_regression_matches_sklearn_optimum(k):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(k)
    x = rng.standard_normal((400, 4))
    y = (x @ rng.standard_normal((4, k)) + rng.standard_normal((400, k))).argmax(1)
    ref = LogisticRegression(tol=1e-10, max_iter=10_000).fit(x, y)
    fast = fit_logistic(x, [y], [k])
    import torch

    proba = fast.predict_proba(torch.as_tensor(x))[0, :, :k].numpy()
    np.testing.assert_allclose(proba, ref.predict_proba(x), atol=1e-4)
    assert np.mean(fast.predict(torch.as_tensor(x))[0].numpy() == ref.predict(x)) > 0.99


@pytest.mark.parametrize("k", [2, 3, 6])
def test_fast_linear_svc_matches_liblinear(k):
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 500)
    x = (y[:, None] + rng.standard_normal((500, 3)) * np.array([0.5, 2.0, 5.0])) * 0.3
    w, b = fit_linear_svc_1d(x, y, k, C=0.01)
    pred = predict_linear_svc_1d(w, b, x).numpy()
    for i in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = LinearSVC(C=0.01, class_weight="balanced", tol=1e-8, max_iter=100_000)
            ref.fit(x[:, i : i + 1], y)
        coef = ref.coef_.reshape(-1)
        np.testing.assert_allclose(w[i].numpy(), coef, atol=1e-4, rtol=1e-3)
        np.testing.assert_allclose(b[i].numpy(), ref.intercept_, atol=1e-4, rtol=1e-3)
        assert np.mean(pred[i] == ref.predict(x[:, i : i + 1])) > 0.995
