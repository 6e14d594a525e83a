"""Downstream classification, as disentanglement_lib's ``compute_downstream_task``.

For each training size (10, 100, 1,000, 10,000), fresh train and 5,000 test points; one
classifier per factor; accuracies per factor, their mean and min. The study has two configs of
this metric, with gradient-boosted trees and with ``LogisticRegressionCV(Cs=10, cv=KFold(5))``;
both draw the same data from the same seed, so here both predictors run on one sample and their
scores are nested under ``gbt`` and ``logistic_regression``.

Fast mode uses the batched boosted trees of :mod:`semidisent.metrics.gbt`; the cross-validated
logistic regression stays scikit-learn's in both modes (passing ``scoring="accuracy"``, the
default dlib relied on, explicitly: scikit-learn 1.9 warns that the default will change).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import MetricSettings, thread_limited
from .representation import CodeCache, RepresentationFunction
from .sampling import factor_codes
from .utils import Mode, as_float

NAME = "downstream"
PREDICTORS = ("gbt", "logistic_regression")


@dataclass(frozen=True)
class DownstreamSettings(MetricSettings):
    num_train: tuple[int, ...] = (10, 100, 1000, 10000)
    num_test: int = 5000
    batch_size: int = 16
    predictors: tuple[str, ...] = PREDICTORS
    # Fast-mode boosted trees: histogram bins per feature of their exact split search (speed
    # only; the splits are scikit-learn's for any value, metrics/gbt.py).
    max_bins: int = 384

    SCALED: ClassVar[tuple[str, ...]] = ("num_train", "num_test")
    MIN_SIZE: ClassVar[int] = 10  # the smallest study size; KFold(5) needs at least 5


def _accuracies(
    predictor: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    mode: Mode,
    device: str,
    seed: int,
    max_bins: int,
) -> tuple[np.ndarray, np.ndarray]:
    f = y_train.shape[1]
    train_acc, test_acc = np.zeros(f), np.zeros(f)
    if predictor == "gbt" and mode == "fast":
        from .gbt import fit_gbt

        res = fit_gbt(
            x_train,
            [y_train[:, j] for j in range(f)],
            x_test,
            max_bins=max_bins,
            device=device,
            seed=seed,
        )
        for j in range(f):
            train_acc[j] = np.mean(res.train_pred[j] == y_train[:, j])
            test_acc[j] = np.mean(res.test_pred[j] == y_test[:, j])
        return train_acc, test_acc
    import warnings

    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import KFold

    for j in range(f):
        y = y_train[:, j]
        if len(np.unique(y)) < 2:  # scikit-learn refuses a single class: predict it
            train_acc[j] = 1.0
            test_acc[j] = np.mean(y_test[:, j] == y[0])
            continue
        if predictor == "gbt":
            model = GradientBoostingClassifier(random_state=seed)
        else:
            model = LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5), scoring="accuracy")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)  # folds missing a class (tiny sizes)
            warnings.simplefilter("ignore", FutureWarning)  # 1.9's notice about l1_ratios
            model.fit(x_train, y)
        train_acc[j] = np.mean(model.predict(x_train) == y)
        test_acc[j] = np.mean(model.predict(x_test) == y_test[:, j])
    return train_acc, test_acc


def downstream_scores(
    sets: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    predictors: tuple[str, ...] = PREDICTORS,
    mode: Mode = "reference",
    device: str = "cpu",
    seed: int = 0,
    max_bins: int = 384,
) -> dict[str, dict[str, float]]:
    """Pure core on [(train size, x_train, y_train, x_test, y_test), ...]."""
    out: dict[str, dict[str, float]] = {}
    for predictor in predictors:
        scores: dict[str, float] = {}
        for size, x_train, y_train, x_test, y_test in sets:
            train, test = _accuracies(
                predictor, x_train, y_train, x_test, y_test, mode, device, seed, max_bins
            )
            scores[f"{size}:mean_train_accuracy"] = as_float(np.mean(train))
            scores[f"{size}:mean_test_accuracy"] = as_float(np.mean(test))
            scores[f"{size}:min_train_accuracy"] = as_float(np.min(train))
            scores[f"{size}:min_test_accuracy"] = as_float(np.min(test))
            for i in range(len(train)):
                scores[f"{size}:train_accuracy_factor_{i}"] = as_float(train[i])
                scores[f"{size}:test_accuracy_factor_{i}"] = as_float(test[i])
        out[predictor] = scores
    return out


@thread_limited
def compute_downstream(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: DownstreamSettings | None = None,
) -> dict[str, dict[str, float]]:
    s = settings or DownstreamSettings()
    for p in s.predictors:
        if p not in PREDICTORS:
            raise ValueError(f"downstream predictor {p!r}; expected one of {PREDICTORS}")
    rng = np.random.RandomState(seed)
    sizes = [n for size in s.num_train for n in (size, s.num_test)]
    samples = factor_codes(
        dataset, representation, rng, sizes, s.batch_size, NAME, s.mode, s.progress
    )
    sets = [(size, *samples[2 * i], *samples[2 * i + 1]) for i, size in enumerate(s.num_train)]
    return downstream_scores(sets, s.predictors, s.mode, s.device, seed, s.max_bins)
