"""Unsupervised scores of the code distribution, as disentanglement_lib's
``unsupervised_metrics``: Gaussian total correlation and Wasserstein correlation of the code
covariance, and the mean pairwise discrete mutual information between 20-bin discretised codes.

Deviation: ``scipy.linalg.sqrtm`` can return a complex matrix for a numerically indefinite
argument; the real part of its trace is used (dlib would fail converting a complex number).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.linalg

from .base import MetricSettings, thread_limited
from .representation import CodeCache, RepresentationFunction
from .sampling import factor_codes
from .utils import Mode, as_float, histogram_discretize, mutual_info

NAME = "unsupervised"


@dataclass(frozen=True)
class UnsupervisedSettings(MetricSettings):
    num_train: int = 10000
    batch_size: int = 16
    num_bins: int = 20

    SCALED: ClassVar[tuple[str, ...]] = ("num_train",)


def gaussian_total_correlation(cov: np.ndarray) -> float:
    """KL between N(0, cov) and the product of its marginals."""
    return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
    """Wasserstein-2 distance between N(0, cov) and the product of its marginals."""
    sqrtm = scipy.linalg.sqrtm(cov * np.expand_dims(np.diag(cov), axis=1))
    return float(2 * np.trace(cov) - 2 * np.real(np.trace(sqrtm)))


def unsupervised_scores(
    codes: np.ndarray, num_bins: int = 20, mode: Mode = "reference"
) -> dict[str, float]:
    """Pure core on codes (n, D)."""
    num_codes = codes.shape[1]
    cov = np.atleast_2d(np.cov(codes.T))
    scores = {
        "gaussian_total_correlation": gaussian_total_correlation(cov),
        "gaussian_wasserstein_correlation": gaussian_wasserstein_correlation(cov),
    }
    scores["gaussian_wasserstein_correlation_norm"] = scores[
        "gaussian_wasserstein_correlation"
    ] / float(np.sum(np.diag(cov)))
    discrete = histogram_discretize(codes, num_bins)
    mi = mutual_info(discrete, discrete, mode)
    np.fill_diagonal(mi, 0)
    pairs = num_codes**2 - num_codes
    scores["mutual_info_score"] = float(np.sum(mi) / pairs) if pairs else 0.0
    return {k: as_float(v) for k, v in scores.items()}


@thread_limited
def compute_unsupervised(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: UnsupervisedSettings | None = None,
) -> dict[str, float]:
    s = settings or UnsupervisedSettings()
    rng = np.random.RandomState(seed)
    [(codes, _)] = factor_codes(
        dataset, representation, rng, [s.num_train], s.batch_size, NAME, s.mode, s.progress
    )
    return unsupervised_scores(codes, s.num_bins, s.mode)
