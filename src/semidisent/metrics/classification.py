"""The "classification" evaluation: how often a family's predicted labels are wrong on the test
split, for families that declare it (``Method.evaluations``; the partially-specified VAE).

The family supplies ``predict(x) -> {label column: {inference name: labels (n,)}}``
(``Method.predictor``). The test split is the dataset's official one (``holdout``: MNIST's and
SVHN's test files, the per-class held-out rows of digits and mnist5k), never seen in training;
a dataset without one (the dSprites grid, the procedural faces) is scored on up to
:data:`TEST_ROWS` rows outside the labelled pool, drawn with the evaluation seed: rows the
unlabelled stream may have shown (transductive), said so in ``metrics_meta.json``.

Truth is the factor value as the labeller reports it (binned columns binned), so a prediction is
scored in the label space the model was trained on. ``val_error`` scores the encoder on the
labelled pool's held-out rows (their labels as drawn): the few-label model-selection score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

TEST_ROWS = 10000
Predict = Callable[[np.ndarray], dict[str, dict[str, np.ndarray]]]


def test_rows(dataset: Any, mask: Any, seed: int) -> tuple[np.ndarray, str]:
    """(rows, what they are) of the test split."""
    if dataset.holdout is not None and len(dataset.holdout):
        return np.asarray(dataset.holdout, dtype=np.int64), "holdout"
    rows = np.setdiff1d(np.arange(dataset.num_rows), np.asarray(mask.rows, dtype=np.int64))
    if len(rows) > TEST_ROWS:
        rng = np.random.RandomState(seed)
        rows = np.sort(rng.choice(rows, TEST_ROWS, replace=False))
    return rows, "rows outside the labelled pool (transductive: no official test split)"


def label_values(factors: np.ndarray, factor_sizes: Any, label_sizes: Any) -> np.ndarray:
    """Factor values in the labeller's label space (supervision/labellers.py ``binned``: a
    column with fewer label values than factor values was cut into equal bins)."""
    out = factors.copy()
    for j, (k, nb) in enumerate(zip(factor_sizes, label_sizes, strict=True)):
        if nb < k:
            out[:, j] = np.minimum(np.floor(factors[:, j] / (k / nb)), nb - 1)
    return out


def _observations(dataset: Any, rows: np.ndarray, seed: int) -> np.ndarray:
    if dataset.variant is None:
        return dataset.images(rows)  # uint8: the predictor decodes as the sampler does
    return dataset.observations_of_rows(rows, np.random.RandomState(seed))


def classification_scores(
    predict: Predict, dataset: Any, mask: Any, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(scores: numbers only, meta: the split and its size). Scores: per label column the error
    of each inference (``error``: the encoder, ``error_<name>`` the others) on the test split and
    the encoder's ``val_error`` on the pool's held-out rows; the first column's at the top."""
    rows, split = test_rows(dataset, mask, seed)
    truth = label_values(dataset.factors_of(rows), dataset.factor_sizes, mask.label_sizes)
    predicted = predict(_observations(dataset, rows, seed))
    val = np.asarray(mask.validation)
    val_pred = predict(_observations(dataset, mask.rows[val], seed)) if len(val) else {}
    names = list(mask.factor_names)
    per: dict[str, dict[str, float]] = {}
    for name, kinds in predicted.items():
        j = names.index(name)
        scores = {}
        for kind, labels in kinds.items():
            key = "error" if kind == "encoder" else f"error_{kind}"
            scores[key] = float(np.mean(labels != truth[:, j]))
        if name in val_pred:
            seen = mask.observed[val, j].astype(bool)
            wrong = val_pred[name]["encoder"] != mask.labels[val, j]
            scores["val_error"] = float(wrong[seen].mean()) if seen.any() else float("nan")
        per[name] = scores
    out: dict[str, Any] = {}
    if per:
        out.update(next(iter(per.values())))
    out["num_test"] = len(rows)
    out["factors"] = per
    return out, {"split": split, "num_test": len(rows), "num_validation": len(val)}
