"""Separated Attribute Predictability (Kumar et al. 2018), as disentanglement_lib's
``compute_sap`` with ``continuous_factors=False`` (the study setting).

Score matrix S[i, j]: test accuracy of ``LinearSVC(C=0.01, class_weight="balanced")`` trained
on code dimension i alone to predict factor j; SAP is the mean over factors of the gap between
the two best dimensions. The continuous branch (squared correlation) is ported too.

Reference mode fits scikit-learn's LinearSVC (``random_state`` = the metric seed; its primal
solver draws nothing, dlib leaves it unseeded); fast mode solves the same squared-hinge problems
exactly with batched Newton steps (:func:`semidisent.metrics.linear.fit_linear_svc_1d`).
With a single code dimension the second best is taken as 0 (dlib would fail).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import MetricSettings, thread_limited
from .representation import CodeCache, RepresentationFunction
from .sampling import factor_codes
from .utils import Mode, as_float, encode_labels, split_labelled

NAME = "sap"


@dataclass(frozen=True)
class SAPSettings(MetricSettings):
    num_train: int = 10000
    num_test: int = 5000
    batch_size: int = 16
    continuous_factors: bool = False
    C: float = 0.01

    SCALED: ClassVar[tuple[str, ...]] = ("num_train", "num_test")


def _svc_column_reference(x, y, x_test, y_test, C: float, seed: int) -> np.ndarray:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    out = np.zeros(x.shape[1])
    if len(np.unique(y)) < 2:  # LinearSVC refuses a single class: it always predicts it
        return np.array([np.mean(y_test == y[0])] * x.shape[1]) if len(y_test) else out
    for i in range(x.shape[1]):
        clf = LinearSVC(C=C, class_weight="balanced", random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x[:, i : i + 1], y)
        out[i] = np.mean(clf.predict(x_test[:, i : i + 1]) == y_test)
    return out


def _svc_column_fast(x, y, x_test, y_test, C: float, device: str) -> np.ndarray:
    from .linear import fit_linear_svc_1d, predict_linear_svc_1d

    classes, enc = encode_labels(y)
    if len(classes) < 2:
        return np.array([np.mean(y_test == y[0])] * x.shape[1])
    w, b = fit_linear_svc_1d(x, enc, len(classes), C=C, device=device)
    pred = classes[predict_linear_svc_1d(w, b, x_test).cpu().numpy()]  # (D, n_test)
    return np.mean(pred == y_test[None, :], axis=1)


def score_matrix(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    continuous_factors: bool = False,
    mode: Mode = "reference",
    device: str = "cpu",
    seed: int = 0,
    C: float = 0.01,
    observed: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(D, F) predictability of each factor from each single code dimension."""
    d, f = x.shape[1], y.shape[1]
    s = np.zeros((d, f))
    for j in range(f):
        tr = slice(None) if observed is None else observed[0][:, j]
        te = slice(None) if observed is None else observed[1][:, j]
        xj, yj, xt, yt = x[tr], y[tr, j], x_test[te], y_test[te, j]
        if len(yj) == 0 or len(yt) == 0:
            s[:, j] = np.nan
            continue
        if continuous_factors:
            for i in range(d):
                cov = np.cov(xj[:, i], yj, ddof=1)
                s[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
        elif mode == "reference":
            s[:, j] = _svc_column_reference(xj, yj, xt, yt, C, seed)
        else:
            s[:, j] = _svc_column_fast(xj, yj, xt, yt, C, device)
    return s


def avg_diff_top_two(matrix: np.ndarray) -> float:
    matrix = matrix[:, ~np.isnan(matrix).any(axis=0)]
    if matrix.shape[1] == 0:
        return 0.0
    ordered = np.sort(matrix, axis=0)
    second = ordered[-2] if len(ordered) > 1 else np.zeros(matrix.shape[1])
    return float(np.mean(ordered[-1] - second))


def sap_scores(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    continuous_factors: bool = False,
    mode: Mode = "reference",
    device: str = "cpu",
    seed: int = 0,
    C: float = 0.01,
    observed: tuple[np.ndarray, np.ndarray] | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Pure core on codes (n, D) and factors (n, F) of the train and test sets."""
    s = score_matrix(x, y, x_test, y_test, continuous_factors, mode, device, seed, C, observed)
    if details is not None:
        details["score_matrix"] = s
    return {"SAP_score": as_float(avg_diff_top_two(s))}


def sap_on_fixed_data(
    codes: np.ndarray,
    labels: np.ndarray,
    observed: np.ndarray | None = None,
    train_percentage: float = 0.9,
    continuous_factors: bool = False,
    mode: Mode = "reference",
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    """dlib's ``compute_sap_on_fixed_data`` (``sap_score_validation``)."""
    x, y, x_test, y_test, obs = split_labelled(codes, labels, observed, train_percentage)
    return sap_scores(x, y, x_test, y_test, continuous_factors, mode, device, seed, observed=obs)


@thread_limited
def compute_sap(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: SAPSettings | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    s = settings or SAPSettings()
    rng = np.random.RandomState(seed)
    (x, y), (x_test, y_test) = factor_codes(
        dataset,
        representation,
        rng,
        [s.num_train, s.num_test],
        s.batch_size,
        NAME,
        s.mode,
        s.progress,
    )
    return sap_scores(
        x, y, x_test, y_test, s.continuous_factors, s.mode, s.device, seed, s.C, details=details
    )
