"""Mutual Information Gap (Chen et al. 2018), as disentanglement_lib's ``compute_mig``.

Codes are discretised into 20 equal-width bins over each dimension's sample range; for each
factor, MIG is the gap between the two largest mutual informations (nats) of a code dimension
with that factor, divided by the factor's empirical entropy; the score is the mean over factors.

"Perfect" is below 1 for factors with more values than bins: a code equal to the factor keeps
at most the information of 20 bins, H(bins) / H(factor) ~ log(20) / log(k) (METHODS.md sec. 6).

Edge cases where dlib would fail (documented deviations): with one code dimension the second
MI is taken as 0; factors with zero empirical entropy (a single sampled value) are left out of
the mean instead of dividing by zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import MetricSettings, thread_limited
from .representation import CodeCache, RepresentationFunction
from .sampling import factor_codes
from .utils import Mode, as_float, discrete_entropy, histogram_discretize, mutual_info

NAME = "mig"


@dataclass(frozen=True)
class MIGSettings(MetricSettings):
    num_train: int = 10000
    batch_size: int = 16
    num_bins: int = 20

    SCALED: ClassVar[tuple[str, ...]] = ("num_train",)


def mig_from_matrix(m: np.ndarray, entropy: np.ndarray) -> float:
    """mean_j (largest - second largest of m[:, j]) / H_j over factors with H_j > 0."""
    ordered = np.sort(m, axis=0)[::-1]
    second = ordered[1] if len(ordered) > 1 else np.zeros(m.shape[1])
    keep = entropy > 0
    if not keep.any():
        return 0.0
    return float(np.mean((ordered[0][keep] - second[keep]) / entropy[keep]))


def mig_scores(
    codes: np.ndarray,
    factors: np.ndarray,
    num_bins: int = 20,
    mode: Mode = "reference",
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Pure core on codes (n, D) and factor values (n, F)."""
    discretized = histogram_discretize(codes, num_bins)
    m = mutual_info(discretized, factors, mode)
    entropy = discrete_entropy(factors, mode)
    if details is not None:
        details["mutual_information"] = m
        details["factor_entropy"] = entropy
    return {"discrete_mig": as_float(mig_from_matrix(m, entropy))}


def mig_on_fixed_data(
    codes: np.ndarray,
    labels: np.ndarray,
    observed: np.ndarray | None = None,
    num_bins: int = 20,
    mode: Mode = "reference",
) -> dict[str, float]:
    """dlib's ``compute_mig_on_fixed_data`` (``mig_validation``): MIG of given codes and labels.

    With ``observed`` (the supervision mask's per-entry flags) each factor uses only the rows
    where its label is observed; the codes are discretised once over all rows, as dlib does.
    """
    if observed is None or observed.all():
        return mig_scores(codes, labels, num_bins, mode)
    discretized = histogram_discretize(codes, num_bins)
    m = np.zeros((codes.shape[1], labels.shape[1]))
    entropy = np.zeros(labels.shape[1])
    for j in range(labels.shape[1]):
        rows = observed[:, j]
        if rows.sum() < 2:
            continue
        y = labels[rows, j : j + 1]
        m[:, j] = mutual_info(discretized[rows], y, mode)[:, 0]
        entropy[j] = discrete_entropy(y, mode)[0]
    return {"discrete_mig": as_float(mig_from_matrix(m, entropy))}


@thread_limited
def compute_mig(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: MIGSettings | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    s = settings or MIGSettings()
    rng = np.random.RandomState(seed)
    [(codes, factors)] = factor_codes(
        dataset, representation, rng, [s.num_train], s.batch_size, NAME, s.mode, s.progress
    )
    return mig_scores(codes, factors, s.num_bins, s.mode, details)
