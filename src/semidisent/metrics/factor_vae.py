"""FactorVAE score (Kim & Mnih 2018), as disentanglement_lib's ``compute_factor_vae``.

Codes are standardised by their global variance (10,000 points); each vote fixes one factor
over a batch of 64 and votes for the active dimension with the smallest relative variance; the
classifier is the majority factor of each dimension on 10,000 training votes, scored on 5,000
evaluation votes. Dimensions with global std < 0.05 are pruned (the study setting).

dlib quirks reproduced: ``num_active_dims`` reports the total number of dimensions (dlib returns
``len(mask)``); the number actually kept is ``num_active_dims_pruned``. Votes index the argmin
within the active dimensions, which relabels columns but leaves the accuracy unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import MetricSettings, thread_limited
from .representation import CodeCache, RepresentationFunction
from .sampling import Sampler, make_sampler
from .utils import Mode, as_float

NAME = "factor_vae"


@dataclass(frozen=True)
class FactorVAESettings(MetricSettings):
    batch_size: int = 64
    num_train: int = 10000
    num_eval: int = 5000
    num_variance_estimate: int = 10000
    # prune_dims.threshold of the study gin files (the function's own default is 0).
    prune_threshold: float = 0.05

    SCALED: ClassVar[tuple[str, ...]] = ("num_train", "num_eval", "num_variance_estimate")


def prune_dims(variances: np.ndarray, threshold: float) -> np.ndarray:
    return np.sqrt(variances) >= threshold


def _sample_votes(sampler: Sampler, batch_size: int, num_points: int) -> np.ndarray:
    dataset, rng = sampler.dataset, sampler.rng
    labels = np.zeros(num_points, dtype=np.int64)
    for i in range(num_points):
        k = rng.randint(dataset.num_factors)
        f = dataset.sample_factors(batch_size, rng)
        f[:, k] = f[0, k]
        sampler.add(f)
        labels[i] = k
    return labels


def votes_from_codes(
    codes: np.ndarray,
    labels: np.ndarray,
    global_var: np.ndarray,
    active: np.ndarray,
    num_factors: int,
    mode: Mode = "reference",
) -> np.ndarray:
    """(num_factors, D) vote counts from the codes of len(labels) batches (stacked in order)."""
    n = len(labels)
    batches = codes.reshape(n, -1, codes.shape[-1])
    votes = np.zeros((num_factors, codes.shape[-1]), dtype=np.int64)
    if mode == "reference":
        for i in range(n):
            local = np.var(batches[i], axis=0, ddof=1)
            votes[labels[i], np.argmin(local[active] / global_var[active])] += 1
        return votes
    local = np.var(batches, axis=1, ddof=1)
    argmin = np.argmin(local[:, active] / global_var[active], axis=1)
    np.add.at(votes, (labels, argmin), 1)
    return votes


def factor_vae_scores(train_votes: np.ndarray, eval_votes: np.ndarray) -> dict[str, float]:
    """Pure core: majority-vote classifier accuracy on the training and evaluation votes."""
    classifier = np.argmax(train_votes, axis=0)
    other = np.arange(train_votes.shape[1])
    train_acc = np.sum(train_votes[classifier, other]) / max(1, np.sum(train_votes))
    eval_acc = np.sum(eval_votes[classifier, other]) / max(1, np.sum(eval_votes))
    return {"train_accuracy": as_float(train_acc), "eval_accuracy": as_float(eval_acc)}


@thread_limited
def compute_factor_vae(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: FactorVAESettings | None = None,
) -> dict[str, float]:
    s = settings or FactorVAESettings()
    rng = np.random.RandomState(seed)
    sampler = make_sampler(dataset, representation, rng, NAME, s.mode, s.progress)
    sampler.expect(s.num_variance_estimate + s.batch_size * (s.num_train + s.num_eval))
    # sample_observations(n) = sample(n): all factors, then their observations, encoded in
    # chunks of 64 (dlib's _compute_variances eval_batch_size).
    sampler.add(dataset.sample_factors(s.num_variance_estimate, rng), fn_batch=64)
    global_codes = sampler.codes()
    global_var = np.var(global_codes, axis=0, ddof=1)
    active = prune_dims(global_var, s.prune_threshold)
    if not active.any():
        return {
            "train_accuracy": 0.0,
            "eval_accuracy": 0.0,
            "num_active_dims": 0,
            "num_active_dims_pruned": 0,
        }
    train_y = _sample_votes(sampler, s.batch_size, s.num_train)
    eval_y = _sample_votes(sampler, s.batch_size, s.num_eval)
    codes = sampler.codes()[s.num_variance_estimate :]
    n_train = s.batch_size * s.num_train
    f = dataset.num_factors
    train_votes = votes_from_codes(codes[:n_train], train_y, global_var, active, f, s.mode)
    eval_votes = votes_from_codes(codes[n_train:], eval_y, global_var, active, f, s.mode)
    scores: dict[str, Any] = factor_vae_scores(train_votes, eval_votes)
    scores["num_active_dims"] = len(active)  # dlib's value (the quirk above)
    scores["num_active_dims_pruned"] = int(active.sum())
    return scores
