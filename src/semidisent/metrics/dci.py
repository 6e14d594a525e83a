"""Disentanglement, Completeness, Informativeness (Eastwood & Williams 2018), as
disentanglement_lib's ``compute_dci``.

One gradient-boosted classifier per factor on the raw codes (10,000 train / 5,000 test points);
its impurity-based feature importances form the (codes x factors) matrix R.
``disentanglement = sum_i rho_i (1 - H_K(R_i.))`` with rho_i the share of code i in R,
``completeness = sum_j rho_j (1 - H_D(R_.j))``; informativeness is the mean classification
**accuracy** over factors (dlib's naming, not an error).

Reference mode uses scikit-learn's ``GradientBoostingClassifier()`` with ``random_state`` =
the metric seed (dlib leaves it unseeded: the global numpy RNG then decides ties between
features). Fast mode uses :mod:`semidisent.metrics.gbt`, the same algorithm batched in torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.stats

from .base import MetricSettings, thread_limited
from .representation import CodeCache, RepresentationFunction
from .sampling import factor_codes
from .utils import Mode, as_float, parallel_map, resolve_workers, split_labelled

NAME = "dci"


@dataclass(frozen=True)
class DCISettings(MetricSettings):
    num_train: int = 10000
    num_test: int = 5000
    batch_size: int = 16
    # Fast mode: histogram bins per feature of the exact split search (a speed setting: the
    # splits are scikit-learn's for any value; see metrics/gbt.py). 384 was chosen when a slip
    # gave features twice max_bins bins; since issue 21's fix it means 384.
    max_bins: int = 384

    SCALED: ClassVar[tuple[str, ...]] = ("num_train", "num_test")


def disentanglement(importance: np.ndarray) -> float:
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    code_importance = importance.sum(axis=1) / importance.sum()
    return float(np.sum(per_code * code_importance))


def completeness(importance: np.ndarray) -> float:
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    factor_importance = importance.sum(axis=0) / importance.sum()
    return float(np.sum(per_factor * factor_importance))


def _gbt_reference(
    x_train, y_train, x_test, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.ensemble import GradientBoostingClassifier

    if len(np.unique(y_train)) < 2:  # scikit-learn refuses one class; nothing to learn
        c = y_train[0]
        return np.zeros(x_train.shape[1]), np.full(len(x_train), c), np.full(len(x_test), c)
    model = GradientBoostingClassifier(random_state=seed).fit(x_train, y_train)
    return np.abs(model.feature_importances_), model.predict(x_train), model.predict(x_test)


def importance_gbt(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    mode: Mode = "reference",
    device: str = "cpu",
    seed: int = 0,
    max_bins: int = 384,
    observed: tuple[np.ndarray, np.ndarray] | None = None,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(importance (D, F), train accuracy (F,), test accuracy (F,)).

    ``observed``: per-entry flags (train, test) of the labels; each factor then uses only its
    observed rows (the few-label generalisation). Factors with no observed training row get a
    zero importance column and NaN accuracies (left out of the means). ``workers`` factors
    (fast mode: groups of boosting problems) are fitted at the same time; the same scores to
    float rounding.
    """
    d, f = x_train.shape[1], y_train.shape[1]
    imp = np.zeros((d, f))
    train_acc = np.full(f, np.nan)
    test_acc = np.full(f, np.nan)
    rows = [
        (
            np.ones(len(x_train), bool) if observed is None else observed[0][:, j],
            np.ones(len(x_test), bool) if observed is None else observed[1][:, j],
        )
        for j in range(f)
    ]
    if mode == "fast" and observed is None:
        from .gbt import fit_gbt

        res = fit_gbt(
            x_train,
            [y_train[:, j] for j in range(f)],
            x_test,
            max_bins=max_bins,
            device=device,
            workers=workers,
            seed=seed,
        )
        for j in range(f):
            imp[:, j] = res.importances[j]
            train_acc[j] = np.mean(res.train_pred[j] == y_train[:, j])
            if len(y_test):
                test_acc[j] = np.mean(res.test_pred[j] == y_test[:, j])
        return imp, train_acc, test_acc

    def one(j: int) -> tuple[np.ndarray, float, float] | None:
        """Factor j's (importance column, train accuracy, test accuracy)."""
        tr, te = rows[j]
        if not tr.any():
            return None
        xtr, ytr, xte, yte = x_train[tr], y_train[tr, j], x_test[te], y_test[te, j]
        if mode == "reference":
            col, ptr, pte = _gbt_reference(xtr, ytr, xte, seed)
        else:
            from .gbt import fit_gbt

            res = fit_gbt(xtr, [ytr], xte, max_bins=max_bins, device=device, seed=seed)
            col, ptr, pte = res.importances[0], res.train_pred[0], res.test_pred[0]
        return col, np.mean(ptr == ytr), np.mean(pte == yte) if len(yte) else np.nan

    for j, fitted in enumerate(parallel_map(one, range(f), workers)):
        if fitted is not None:
            imp[:, j], train_acc[j], test_acc[j] = fitted
    return imp, train_acc, test_acc


def dci_scores(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    mode: Mode = "reference",
    device: str = "cpu",
    seed: int = 0,
    max_bins: int = 384,
    observed: tuple[np.ndarray, np.ndarray] | None = None,
    details: dict[str, Any] | None = None,
    workers: int = 1,
) -> dict[str, float]:
    """Pure core on codes (n, D) and factors (n, F) of the train and test sets."""
    imp, train_acc, test_acc = importance_gbt(
        x_train, y_train, x_test, y_test, mode, device, seed, max_bins, observed, workers
    )
    used = ~np.isnan(train_acc)
    if details is not None:
        details["importance_matrix"] = imp
    if not used.any():
        return {
            "informativeness_train": 0.0,
            "informativeness_test": 0.0,
            "disentanglement": 0.0,
            "completeness": 0.0,
        }
    imp_used = imp[:, used]
    test_used = test_acc[used & ~np.isnan(test_acc)]
    return {
        "informativeness_train": as_float(np.mean(train_acc[used])),
        "informativeness_test": as_float(np.mean(test_used)) if len(test_used) else 0.0,
        "disentanglement": as_float(disentanglement(imp_used)),
        "completeness": as_float(completeness(imp_used)),
    }


def dci_on_fixed_data(
    codes: np.ndarray,
    labels: np.ndarray,
    observed: np.ndarray | None = None,
    train_percentage: float = 0.9,
    mode: Mode = "reference",
    device: str = "cpu",
    seed: int = 0,
    max_bins: int = 384,
    workers: int = 1,
) -> dict[str, float]:
    """dlib's ``compute_dci_on_fixed_data`` (``dci_validation``): the first ceil(0.9 n) rows
    train, the rest test."""
    x_train, y_train, x_test, y_test, obs = split_labelled(
        codes, labels, observed, train_percentage
    )
    return dci_scores(
        x_train, y_train, x_test, y_test, mode, device, seed, max_bins, obs, workers=workers
    )


def compute_dci(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: DCISettings | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    s = settings or DCISettings()
    return score_dci(sample_dci(dataset, representation, seed, s), seed, s, details)


DCIData = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@thread_limited
def sample_dci(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: DCISettings,
) -> DCIData:
    """The metric's points: (codes, factors) of its training and test sets, drawn from
    ``RandomState(seed)`` as dlib draws them (the first of :func:`compute_dci`'s two parts; the
    registry runs the second, :func:`score_dci`, alongside other metrics)."""
    s = settings
    (x_train, y_train), (x_test, y_test) = factor_codes(
        dataset,
        representation,
        np.random.RandomState(seed),
        [s.num_train, s.num_test],
        s.batch_size,
        NAME,
        s.mode,
        s.progress,
    )
    return x_train, y_train, x_test, y_test


@thread_limited
def score_dci(
    data: DCIData, seed: int, settings: DCISettings, details: dict[str, Any] | None = None
) -> dict[str, float]:
    """The scores of :func:`sample_dci`'s points: the boosted trees and what follows."""
    s = settings
    return dci_scores(
        *data,
        s.mode,
        s.device,
        seed,
        s.max_bins,
        details=details,
        workers=resolve_workers(s.workers),
    )
