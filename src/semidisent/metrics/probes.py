"""The "probes" evaluation: how much of the labels a representation makes linearly (and almost
linearly) readable, for families that declare it (``Method.evaluations``; the local-decoder VAE,
docs/localvae.md). The authors' protocol (seed_models.md 2.3), on the encoder MEAN mu(x):

- ``linear_accuracy``: a linear classifier fitted on the training rows' codes, scored on the test
  rows: logistic regression (default) or the authors' linear SVM (``SVC(kernel="linear")``), on
  standardised codes;
- ``mlp_accuracy``: a small MLP (one hidden layer of 200 ReLU units, Adam 1e-3, 100 epochs;
  the authors' z -> 200 -> 10 without batch normalisation: scikit-learn's MLPClassifier);
- ``pca_explained``: the explained-variance ratio of the means' principal components (how many
  directions the code really uses), with ``pca_dims_90`` the components reaching 90%;
- ``posterior_entropy``: the average differential entropy of q(z | x), sum_d 0.5 log(2 pi e
  sigma_d^2), in nats;
- ``bits_per_dim``: the test rows' negative ELBO (one z per image, seeded) in bits per dimension,
  when the network has a likelihood (``posterior`` and ``log_likelihood``).

Rows: the dataset's test split (``holdout``; mnist5k: 1,000 images) against the other rows; a
dataset without one (the factor grids) draws disjoint training and test rows with the seed. Each
label column is a classification target (factor values as indices). Sizes are capped at
:data:`TRAIN_ROWS` / :data:`TEST_ROWS` times ``eval.sample_scale`` (at least 500 each).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np

TRAIN_ROWS = 10_000
TEST_ROWS = 5_000
MIN_ROWS = 500
MLP_HIDDEN = 200
MLP_EPOCHS = 100


def probe_rows(dataset: Any, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, str]:
    """(training rows, test rows, what the split is)."""
    rng = np.random.RandomState(seed)
    n_train = max(MIN_ROWS, int(TRAIN_ROWS * scale))
    n_test = max(MIN_ROWS, int(TEST_ROWS * scale))
    if dataset.holdout is not None and len(dataset.holdout):
        test = np.asarray(dataset.holdout, dtype=np.int64)
        train = np.setdiff1d(np.arange(dataset.num_rows), test)
        split = "holdout"
    else:
        n = min(dataset.num_rows, n_train + n_test)
        rows = rng.choice(dataset.num_rows, n, replace=False)
        n_test = min(n_test, n // 5) if n < n_train + n_test else n_test
        test, train = rows[:n_test], rows[n_test:]
        split = "disjoint random rows (no official test split)"
    if len(train) > n_train:
        train = rng.choice(train, n_train, replace=False)
    if len(test) > n_test:
        test = rng.choice(test, n_test, replace=False)
    return np.sort(train), np.sort(test), split


def encode_rows(
    network: Any, dataset: Any, rows: np.ndarray, device: str, batch: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """(means, log-variances) of q(z | x) for the rows' images."""
    import torch

    means, log_vars = [], []
    with torch.inference_mode():
        for start in range(0, len(rows), batch):
            x = torch.from_numpy(dataset.images(rows[start : start + batch])).to(device)
            x = x.float() * torch.tensor(1.0 / 255.0, dtype=torch.float32)
            m, lv = network.encode(x)
            means.append(m.float().cpu().numpy())
            log_vars.append(lv.float().cpu().numpy())
    return np.concatenate(means), np.concatenate(log_vars)


def bits_per_dim(network: Any, dataset: Any, rows: np.ndarray, device: str, seed: int) -> float:
    """-ELBO per dimension in bits of the rows' images, one reparameterised z per image."""
    import torch

    g = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(rows), 256):
            x = torch.from_numpy(dataset.images(rows[start : start + 256])).to(device)
            x = x.float() * torch.tensor(1.0 / 255.0, dtype=torch.float32)
            mean, std = network.posterior(x)
            eps = torch.randn(mean.shape, generator=g).to(device)
            log_px = network.log_likelihood(x, mean + std * eps)
            kl = 0.5 * (mean.square() + std.square() - 1.0 - 2.0 * torch.log(std)).sum(-1)
            total += float((kl - log_px).sum())
    return total / (len(rows) * network.dims * math.log(2.0))


def linear_probe(kind: str, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    if kind == "svm":
        return SVC(kernel="linear")
    return LogisticRegression(max_iter=2000)


def probe_accuracies(
    train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray,
    linear: str = "logistic", seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Test accuracy of the linear and the MLP probe fitted on (train, y_train)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    a, b = scaler.transform(train), scaler.transform(test)
    out = {}
    if len(np.unique(y_train)) < 2:  # nothing to classify
        return {"linear_accuracy": float("nan"), "mlp_accuracy": float("nan")}
    out["linear_accuracy"] = float(linear_probe(linear, seed).fit(a, y_train).score(b, y_test))
    mlp = MLPClassifier(
        hidden_layer_sizes=(MLP_HIDDEN,), learning_rate_init=1e-3, max_iter=MLP_EPOCHS,
        batch_size=100, random_state=seed,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        out["mlp_accuracy"] = float(mlp.fit(a, y_train).score(b, y_test))
    return out


def pca_explained(means: np.ndarray) -> np.ndarray:
    """Explained-variance ratio of the principal components of the rows (decreasing)."""
    centred = means - means.mean(0)
    s = np.linalg.svd(centred, compute_uv=False) ** 2
    return s / s.sum() if s.sum() > 0 else s


def posterior_entropy(log_vars: np.ndarray) -> float:
    """Mean over rows of the posterior's entropy sum_d 0.5 (log(2 pi e) + log sigma_d^2)."""
    return float(np.mean(np.sum(0.5 * (math.log(2 * math.pi * math.e) + log_vars), axis=1)))


def probe_scores(
    network: Any, dataset: Any, mask: Any, seed: int, device: str = "cpu",
    sample_scale: float = 1.0, linear: str = "logistic",
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """(scores: numbers only, meta): per label column the two probes' accuracies (the first
    column's at the top), the PCA ratios, the posterior entropy and the bits/dim."""
    t0 = time.perf_counter()
    train, test, split = probe_rows(dataset, seed, sample_scale)
    m_train, lv_train = encode_rows(network, dataset, train, device)
    m_test, _ = encode_rows(network, dataset, test, device)
    f_train, f_test = dataset.factors_of(train), dataset.factors_of(test)
    per = {
        name: probe_accuracies(m_train, f_train[:, j], m_test, f_test[:, j], linear, seed)
        for j, name in enumerate(mask.factor_names)
    }
    ratios = pca_explained(m_train)
    out: dict[str, Any] = dict(next(iter(per.values())))
    out["pca_explained"] = [float(r) for r in ratios]
    out["pca_dims_90"] = int(np.searchsorted(np.cumsum(ratios), 0.9) + 1)
    out["posterior_entropy"] = posterior_entropy(lv_train)
    if hasattr(network, "log_likelihood") and hasattr(network, "posterior"):
        out["bits_per_dim"] = bits_per_dim(network, dataset, test, device, seed)
    out["factors"] = per
    meta = {
        "split": split,
        "num_train": len(train),
        "num_test": len(test),
        "linear": linear,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return out, meta
