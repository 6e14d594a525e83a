"""The building blocks of the metrics against scikit-learn / numpy: discretisation, mutual
information, entropy, the fast boosted trees, logistic regression and linear SVM."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semidisent.metrics import utils
from semidisent.metrics.gbt import fit_gbt
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


def _gbt_data(discrete: bool, n: int = 600, seed: int = 0):
    rng = np.random.RandomState(seed)
    y = np.stack([rng.randint(k, size=n) for k in (2, 3, 5)], 1)
    noise = rng.randint(0, 2, size=y.shape) if discrete else rng.randn(*y.shape)
    x = np.c_[y + noise, rng.randint(0, 4, size=(n, 2)) if discrete else rng.randn(n, 2)]
    return x.astype(np.float32), y


@pytest.mark.parametrize("depth", [3, 1, 4])
def test_fast_gbt_equals_sklearn_when_every_value_is_a_candidate(depth):
    """With few distinct feature values every split is a candidate in both: same trees (depth 4:
    a level whose parents come in two blocks of nodes)."""
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _gbt_data(discrete=True)
    res = fit_gbt(x, [y[:, j] for j in range(3)], x[:100], n_estimators=30, max_depth=depth)
    for j in range(3):
        ref = GradientBoostingClassifier(n_estimators=30, max_depth=depth, random_state=0)
        ref.fit(x, y[:, j])
        np.testing.assert_allclose(res.importances[j], ref.feature_importances_, atol=1e-6)
        np.testing.assert_array_equal(res.train_pred[j], ref.predict(x))
        np.testing.assert_array_equal(res.test_pred[j], ref.predict(x[:100]))


def test_fast_gbt_close_to_sklearn_on_continuous_features():
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _gbt_data(discrete=False, n=800)
    res = fit_gbt(x, [y[:, j] for j in range(3)], None, n_estimators=40, max_bins=64)
    for j in range(3):
        ref = GradientBoostingClassifier(n_estimators=40, random_state=0).fit(x, y[:, j])
        assert np.abs(res.importances[j] - ref.feature_importances_).max() < 0.05
        acc_fast = np.mean(res.train_pred[j] == y[:, j])
        acc_ref = np.mean(ref.predict(x) == y[:, j])
        assert abs(acc_fast - acc_ref) < 0.05


def test_fast_gbt_workers_give_identical_results():
    """Task groups boosted in parallel threads: the same predictions as one worker and the same
    importances to float rounding, results in the order of the labels. The sparse histogram
    product may sum in another order for another number of columns (and threads): each split
    gain comes from float32 sums of at most n = 700 values, whose relative rounding error is at
    most n * eps32 = 4.2e-5 (seen: 1.2e-7), hence rtol 5e-5."""
    x, y = _gbt_data(discrete=False, n=700)
    ys = [y[:, 2], y[:, 0], np.full(len(y), 4), y[:, 1]]  # 5, 2, 1, 3 classes
    one = fit_gbt(x, ys, x[:90], n_estimators=12, max_bins=64, workers=1)
    for workers in (2, 3, 8):
        par = fit_gbt(x, ys, x[:90], n_estimators=12, max_bins=64, workers=workers)
        for a, b in zip(one.importances, par.importances, strict=True):
            np.testing.assert_allclose(a, b, rtol=5e-5, atol=1e-12)
        for field in ("train_pred", "test_pred"):
            for a, b in zip(getattr(one, field), getattr(par, field), strict=True):
                np.testing.assert_array_equal(a, b)
    assert np.all(one.train_pred[2] == 4) and np.all(one.importances[2] == 0)


def test_gbt_groups_balance_trees():
    from semidisent.metrics.gbt import _groups

    # dSprites' factors: 3, 6, 40, 32, 32 classes -> 40 + 6 + 3 trees against 32 + 32.
    groups = _groups([3, 6, 40, 32, 32], 2)
    assert sorted(map(sorted, groups)) == [[0, 1, 2], [3, 4]]
    assert sorted(i for g in _groups([1, 0, 5, 2], 8) for i in g) == [0, 1, 2, 3]
    assert len(_groups([1, 0, 5, 2], 8)) == 3  # no more groups than tasks with trees
    assert _groups([4, 4], 1) == [[0, 1]]


def test_gbt_probabilities_survive_overflow():
    """Without max subtraction exp overflows for large raw predictions; the per-task softmax /
    sigmoid then takes over and gives the same probabilities torch's would."""
    import torch

    from semidisent.metrics.gbt import _Probabilities

    tasks = [(np.arange(3), None), (np.arange(2), None)]
    probs = _Probabilities(tasks, [(0, 3), (3, 1)], 4, torch.device("cpu"))
    for scale in (1.0, 800.0):  # 800: e^800 overflows float64
        raw = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        raw *= scale
        got = probs(raw.clone())
        np.testing.assert_allclose(got[:, :3], torch.softmax(raw[:, :3], 1), rtol=1e-12)
        np.testing.assert_allclose(got[:, 3], torch.sigmoid(raw[:, 3]), rtol=1e-12)
        assert torch.isfinite(got).all()


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


def test_fast_gbt_degenerate_labels():
    x = np.random.default_rng(0).standard_normal((50, 3))
    res = fit_gbt(x, [np.full(50, 7)], x[:5], n_estimators=3)
    assert np.all(res.importances[0] == 0)
    assert np.all(res.train_pred[0] == 7) and np.all(res.test_pred[0] == 7)


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
