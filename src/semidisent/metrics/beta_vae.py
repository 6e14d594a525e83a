"""BetaVAE score (Higgins et al. 2017), as disentanglement_lib's ``compute_beta_vae_sklearn``.

Each point: pick a factor k, draw two batches of 64 factor vectors that agree on factor k, and
take the mean absolute difference of their codes as the feature, k as the label. A linear
classifier trained on 10,000 such points is scored on 5,000 fresh ones (``eval_accuracy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import MetricSettings, thread_limited
from .representation import CodeCache, RepresentationFunction
from .sampling import Sampler, make_sampler
from .utils import Mode, as_float, encode_labels, torch_linear_models

NAME = "beta_vae"


@dataclass(frozen=True)
class BetaVAESettings(MetricSettings):
    batch_size: int = 64
    num_train: int = 10000
    num_eval: int = 5000

    SCALED: ClassVar[tuple[str, ...]] = ("num_train", "num_eval")


def _sample_points(sampler: Sampler, batch_size: int, num_points: int) -> np.ndarray:
    """dlib's ``_generate_training_sample`` RNG order: randint(F), factors1, factors2, then the
    observations of factors1 and of factors2. Returns the labels; codes come later."""
    dataset, rng = sampler.dataset, sampler.rng
    labels = np.zeros(num_points, dtype=np.int64)
    for i in range(num_points):
        k = rng.randint(dataset.num_factors)
        f1 = dataset.sample_factors(batch_size, rng)
        f2 = dataset.sample_factors(batch_size, rng)
        f2[:, k] = f1[:, k]
        sampler.add(f1)
        sampler.add(f2)
        labels[i] = k
    return labels


def _features(codes: np.ndarray, num_points: int, batch_size: int, mode: Mode) -> np.ndarray:
    pairs = codes.reshape(num_points, 2, batch_size, -1)
    if mode == "reference":  # dlib's per-point np.mean (its float32 summation order)
        out = np.zeros((num_points, pairs.shape[-1]))
        for i in range(num_points):
            out[i] = np.mean(np.abs(pairs[i, 0] - pairs[i, 1]), axis=0)
        return out
    return np.abs(pairs[:, 0] - pairs[:, 1]).mean(axis=1).astype(np.float64)


def beta_vae_scores(
    train_x: np.ndarray,
    train_y: np.ndarray,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    mode: Mode = "reference",
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    """Pure core: train / eval accuracy of an L2 logistic regression on the features."""
    if not torch_linear_models(mode, device):
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(random_state=seed).fit(train_x, train_y)
        train_pred = model.predict(train_x)
        eval_pred = model.predict(eval_x)
    else:
        import torch

        from .linear import fit_logistic

        classes, enc = encode_labels(train_y)
        if len(classes) == 1:
            train_pred = np.full(len(train_y), classes[0])
            eval_pred = np.full(len(eval_y), classes[0])
        else:
            lr = fit_logistic(train_x, [enc], [len(classes)], C=1.0, device=device)
            dev = lr.weight.device
            train_pred = classes[lr.predict(torch.as_tensor(train_x, device=dev))[0].cpu().numpy()]
            eval_pred = classes[lr.predict(torch.as_tensor(eval_x, device=dev))[0].cpu().numpy()]
    return {
        "train_accuracy": as_float(np.mean(train_pred == train_y)),
        "eval_accuracy": as_float(np.mean(eval_pred == eval_y)),
    }


@thread_limited
def compute_beta_vae(
    dataset: Any,
    representation: RepresentationFunction | CodeCache,
    seed: int,
    settings: BetaVAESettings | None = None,
) -> dict[str, float]:
    s = settings or BetaVAESettings()
    rng = np.random.RandomState(seed)
    sampler = make_sampler(dataset, representation, rng, NAME, s.mode, s.progress)
    sampler.expect(2 * s.batch_size * (s.num_train + s.num_eval))
    # dlib fits the classifier between the two sets; lbfgs draws nothing from the RandomState,
    # so sampling both first gives the same data.
    train_y = _sample_points(sampler, s.batch_size, s.num_train)
    eval_y = _sample_points(sampler, s.batch_size, s.num_eval)
    codes = sampler.codes()
    n_train = 2 * s.batch_size * s.num_train
    train_x = _features(codes[:n_train], s.num_train, s.batch_size, s.mode)
    eval_x = _features(codes[n_train:], s.num_eval, s.batch_size, s.mode)
    return beta_vae_scores(train_x, train_y, eval_x, eval_y, s.mode, s.device, seed)
