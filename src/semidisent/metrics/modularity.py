"""Modularity and explicitness (Ridgeway & Mozer 2018), as disentanglement_lib's
``compute_modularity_explicitness``.

Modularity: from the (codes x factors) mutual information of the 20-bin discretised training
codes, each code's deviation from an ideal code that informs about one factor only,
``1 - (sum_j m_ij^2 - max_j m_ij^2) / (max_j m_ij^2 (K - 1))`` (0 where max is 0), averaged.
Explicitness: per factor, ``LogisticRegression()`` on the standardised codes; the macro ROC-AUC
of its class probabilities (one-vs-rest indicator columns), averaged over factors.

Deviations from dlib, for inputs on which it fails: the indicator columns come from the classes
seen in training for both sets (dlib re-fits its binarizer on the test labels, which misaligns
or raises when a class is missing there); columns without both positives and negatives are left
out of the AUC average; a constant code dimension is divided by 1, not 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import MetricSettings, thread_limited
from .representation import CodeCache, RepresentationFunction
from .sampling import factor_codes
from .utils import (
    Mode,
    as_float,
    encode_labels,
    histogram_discretize,
    mutual_info,
    normalize_data,
    torch_linear_models,
)

NAME = "modularity"


@dataclass(frozen=True)
class ModularitySettings(MetricSettings):
    num_train: int = 10000
    num_test: int = 5000
    batch_size: int = 16
    num_bins: int = 20

    SCALED: ClassVar[tuple[str, ...]] = ("num_train", "num_test")


def modularity(mutual_information: np.ndarray) -> float:
    squared = np.square(mutual_information)
    max_sq = np.max(squared, axis=1)
    numerator = np.sum(squared, axis=1) - max_sq
    denominator = max_sq * (squared.shape[1] - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = 1.0 - numerator / denominator
    score[max_sq == 0.0] = 0.0
    return float(np.mean(score))


def macro_roc_auc(indicator: np.ndarray, scores: np.ndarray) -> float:
    """Mean over columns of the ROC-AUC (Mann-Whitney with average ranks for ties), the value of
    ``roc_auc_score(indicator, scores)`` (macro); columns with one class only are skipped."""
    from scipy.stats import rankdata

    pos = indicator.sum(axis=0)
    neg = len(indicator) - pos
    ok = (pos > 0) & (neg > 0)
    if not ok.any():
        return float("nan")
    ranks = rankdata(scores[:, ok], axis=0)
    rank_pos = (ranks * indicator[:, ok]).sum(axis=0)
    auc = (rank_pos - pos[ok] * (pos[ok] + 1) / 2) / (pos[ok] * neg[ok])
    return float(np.mean(auc))


def _indicator(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return (y[:, None] == classes[None, :]).astype(np.int64)


def _auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray, mode: Mode) -> float:
    ind = _indicator(y, classes)
    if mode == "reference":
        from sklearn.metrics import roc_auc_score

        ok = (ind.sum(0) > 0) & (ind.sum(0) < len(ind))
        if ok.all():
            return float(roc_auc_score(ind, proba))
        return float(roc_auc_score(ind[:, ok], proba[:, ok])) if ok.any() else float("nan")
    return macro_roc_auc(ind, proba)


def explicitness(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    mode: Mode = "reference",
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-factor ROC-AUC on train and test of a logistic regression on standardised codes."""
    xtr, mean, std = normalize_data(x_train)
    xte, _, _ = normalize_data(x_test, mean, std)
    f = y_train.shape[1]
    roc_train, roc_test = np.zeros(f), np.zeros(f)
    encoded = [encode_labels(y_train[:, j]) for j in range(f)]
    use_torch = torch_linear_models(mode, device)
    if use_torch:
        import torch

        from .linear import fit_logistic

        fit = [j for j in range(f) if len(encoded[j][0]) > 1]
        models = None
        if fit:
            models = fit_logistic(
                xtr,
                [encoded[j][1] for j in fit],
                [len(encoded[j][0]) for j in fit],
                device=device,
            )
            dev = models.weight.device
            p_tr = models.predict_proba(torch.as_tensor(xtr, device=dev)).cpu().numpy()
            p_te = models.predict_proba(torch.as_tensor(xte, device=dev)).cpu().numpy()
    for j in range(f):
        classes = encoded[j][0]
        if len(classes) < 2:  # one class: no classifier, no ranking (dlib would raise)
            roc_train[j] = roc_test[j] = np.nan
            continue
        if not use_torch:
            from sklearn.linear_model import LogisticRegression

            clf = LogisticRegression().fit(xtr, y_train[:, j])
            p_train, p_test = clf.predict_proba(xtr), clf.predict_proba(xte)
        else:
            i = fit.index(j)
            k = len(classes)
            p_train, p_test = p_tr[i][:, :k], p_te[i][:, :k]
        roc_train[j] = _auc(y_train[:, j], p_train, classes, mode)
        roc_test[j] = _auc(y_test[:, j], p_test, classes, mode)
    return roc_train, roc_test


def modularity_scores(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_bins: int = 20,
    mode: Mode = "reference",
    device: str = "cpu",
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Pure core on codes (n, D) and factors (n, F) of the train and test sets."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    mi = mutual_info(histogram_discretize(x_train, num_bins), y_train, mode)
    if details is not None:
        details["mutual_information"] = mi
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        roc_train, roc_test = explicitness(x_train, y_train, x_test, y_test, mode, device)
    return {
        "modularity_score": as_float(modularity(mi)),
        "explicitness_score_train": _mean_finite(roc_train),
        "explicitness_score_test": _mean_finite(roc_test),
    }


def _mean_finite(values: np.ndarray) -> float:
    """Mean over the factors that have a score (0 if none has)."""
    ok = np.isfinite(values)
    return as_float(np.mean(values[ok])) if ok.any() else 0.0


@thread_limited
def compute_modularity(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: ModularitySettings | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    s = settings or ModularitySettings()
    rng = np.random.RandomState(seed)
    (x_train, y_train), (x_test, y_test) = factor_codes(
        dataset,
        representation,
        rng,
        [s.num_train, s.num_test],
        s.batch_size,
        NAME,
        s.mode,
        s.progress,
    )
    return modularity_scores(
        x_train, y_train, x_test, y_test, s.num_bins, s.mode, s.device, details
    )
