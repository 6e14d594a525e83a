"""Interventional Robustness Score (Suter et al. 2019), as disentanglement_lib's ``compute_irs``.

For each factor (discretised!) and each of its values, the 99th percentile of |z - E[z | value]|
per code dimension, averaged over values and divided by the dimension's maximal deviation
max |z - mean z|; IRS per code is the best over factors of 1 - that ratio, averaged over codes
weighted by their maximal deviation.

dlib quirks reproduced: the 20-bin histogram discretisation is applied to the *factors* (so the
40- and 32-valued dSprites factors are merged pairwise); ``num_active_dims`` is ``np.sum`` of the
*values* of the non-constant codes (dlib's expression), the count is
``num_active_dims_count``. The core is plain numpy in both modes (it is cheap); fast mode differs
only in how codes are obtained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import MetricSettings, thread_limited
from .representation import CodeCache, RepresentationFunction
from .sampling import factor_codes
from .utils import as_float, histogram_discretize

NAME = "irs"


@dataclass(frozen=True)
class IRSSettings(MetricSettings):
    num_train: int = 10000
    batch_size: int = 16
    num_bins: int = 20
    diff_quantile: float = 0.99

    SCALED: ClassVar[tuple[str, ...]] = ("num_train",)


def scalable_disentanglement_score(
    gen_factors: np.ndarray, latents: np.ndarray, diff_quantile: float = 0.99
) -> dict[str, Any]:
    """dlib's core on factors (n, F) and active codes (n, D)."""
    num_gen = gen_factors.shape[1]
    num_lat = latents.shape[1]
    max_deviations = np.max(np.abs(latents - latents.mean(axis=0)), axis=0)
    cum_deviations = np.zeros([num_lat, num_gen])
    for i in range(num_gen):
        unique_factors = np.unique(gen_factors[:, i], axis=0)
        for value in unique_factors:
            match = gen_factors[:, i] == value
            e_loc = np.mean(latents[match, :], axis=0)
            diffs = np.abs(latents[match, :] - e_loc)
            cum_deviations[:, i] += np.percentile(diffs, q=diff_quantile * 100, axis=0)
        cum_deviations[:, i] /= len(unique_factors)
    with np.errstate(divide="ignore", invalid="ignore"):
        irs_matrix = 1.0 - cum_deviations / max_deviations[:, np.newaxis]
    scores = irs_matrix.max(axis=1)
    if np.sum(max_deviations) > 0.0:
        avg = np.average(scores, weights=max_deviations)
    else:
        avg = np.mean(scores)
    return {"avg_score": avg, "IRS_matrix": irs_matrix, "disentanglement_scores": scores}


def irs_scores(
    codes: np.ndarray,
    factors: np.ndarray,
    num_bins: int = 20,
    diff_quantile: float = 0.99,
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Pure core on codes (n, D) and factors (n, F)."""
    ys_discrete = histogram_discretize(factors, num_bins)
    active = codes[:, codes.var(axis=0) > 0.0]
    if not active.any():
        score = 0.0
    else:
        out = scalable_disentanglement_score(ys_discrete, active, diff_quantile)
        score = out["avg_score"]
        if details is not None:
            details["irs_matrix"] = out["IRS_matrix"]
    return {
        "IRS": as_float(score),
        "num_active_dims": as_float(np.sum(active)),
        "num_active_dims_count": int(active.shape[1]),
    }


@thread_limited
def compute_irs(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: IRSSettings | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    s = settings or IRSSettings()
    rng = np.random.RandomState(seed)
    [(codes, factors)] = factor_codes(
        dataset, representation, rng, [s.num_train], s.batch_size, NAME, s.mode, s.progress
    )
    return irs_scores(codes, factors, s.num_bins, s.diff_quantile, details)
