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
