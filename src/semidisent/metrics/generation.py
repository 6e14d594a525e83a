"""Generation quality that runs offline: a sliced Wasserstein distance on pixels and a Frechet
distance in the feature space of a classifier trained here on the dataset's factor labels.

Why not FID: the Inception weights cannot be downloaded here, and on dSprites-like data an
ImageNet network's features say little anyway. The classifier (:class:`FactorClassifier`:
disentanglement_lib's conv trunk, FC 256 = the features, one softmax head per factor) is trained
once per dataset and settings, deterministically (seeded CPU training), and cached under
``$SEMIDISENT_CACHE`` (default ``~/.cache/semidisent``); its file's sha256 and held-out accuracy
per factor are reported with every score, so two scores are comparable only with the same hash.

Scores of ``n`` generated images against ``n`` dataset images drawn uniformly (seeded), each
with the same score of a second, disjoint real draw: the floor a perfect generator would reach
at this n (both estimators are biased upwards at finite n).

- ``swd``: sliced Wasserstein-1 distance on pixels: mean over ``projections`` random unit
  directions theta of the W1 distance between the projected sets (with equal sizes: the mean
  |difference| of the sorted projections), as TF-GAN's ``_sliced_wasserstein`` that the St-RKM
  authors use, but on whole images rather than on Laplacian-pyramid patches (Karras et al.),
  whose numbers it does not reproduce. In pixel units (images in [0, 1]).
- ``frechet``: ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)) of the classifier features
  (Heusel et al.'s formula; scipy's sqrtm, the usual eps offset when the product is singular).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.architecture import ConvEncoder, xavier_init_

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    num_samples: int = 10_000
    projections: int = 128
    classifier_steps: int = 2000
    classifier_batch: int = 64
    classifier_lr: float = 1e-3
    classifier_seed: int = 0

    def scaled(self, scale: float) -> GenerationSettings:
        from dataclasses import replace

        return replace(self, num_samples=max(500, round(self.num_samples * scale)))


# ---------------------------------------------------------------------------- the two distances


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, projections: int, seed: int, chunk: int = 32
) -> float:
    """Mean over random unit directions of W1 between the projections of a and b (n, d each)."""
    if a.shape != b.shape:
        raise ValueError(
            f"sliced_wasserstein needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    a, b = a.flatten(1).double(), b.flatten(1).double()
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    theta /= theta.norm(dim=0, keepdim=True)
    total = 0.0
    for i in range(0, projections, chunk):
        t = theta[:, i : i + chunk]
        pa, _ = torch.sort(a @ t, dim=0)
        pb, _ = torch.sort(b @ t, dim=0)
        total += float((pa - pb).abs().mean(dim=0).sum())
    return total / projections


def frechet_from_moments(
    mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||^2 + tr(s1 + s2 - 2 sqrtm(s1 s2)) (pytorch-fid's handling of a singular
    product and of sqrtm's small imaginary parts)."""
    import warnings

    from scipy import linalg

    diff = mu1 - mu2
    with warnings.catch_warnings():
        # A singular product (dead ReLU features) is handled below, as pytorch-fid does.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Frechet distance between the Gaussians of two feature sets (n, d)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    return frechet_from_moments(
        f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)
    )


# ---------------------------------------------------------------------------- the classifier


class FactorClassifier(nn.Module):
    """disentanglement_lib's conv trunk + FC 256 (the features) + a head per factor."""

    def __init__(self, in_channels: int, factor_sizes: tuple[int, ...]):
        super().__init__()
        self.convs = ConvEncoder(in_channels, 1).convs
        self.fc = nn.Linear(64 * 4 * 4, 256)
        self.heads = nn.ModuleList(nn.Linear(256, int(k)) for k in factor_sizes)
        xavier_init_(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(self.convs(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.features(x)
        return [head(h) for head in self.heads]


def cache_dir() -> Path:
    return Path(os.environ.get("SEMIDISENT_CACHE") or Path.home() / ".cache" / "semidisent")


def _as_float(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.dtype == torch.uint8:
        return x.float() * torch.tensor(1.0 / 255.0, dtype=torch.float32)
    return x.float()


def train_classifier(
    dataset: Any, settings: GenerationSettings, progress: bool = False
) -> tuple[FactorClassifier, dict[str, Any]]:
    """Adam on the summed cross-entropies of every factor, rows drawn uniformly (seeded), on the
    CPU with one thread (deterministic); accuracy per factor on 2,000 other seeded rows."""
    rng = np.random.default_rng(settings.classifier_seed)
    sizes = tuple(int(k) for k in dataset.factor_sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.classifier_seed)
        net = FactorClassifier(dataset.observation_shape[0], sizes)
    opt = torch.optim.Adam(net.parameters(), lr=settings.classifier_lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        steps = range(settings.classifier_steps)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="generation: factor classifier", unit="step", leave=False)
        for _ in steps:
            rows = rng.integers(0, dataset.num_rows, settings.classifier_batch)
            x = _as_float(dataset.images(rows))
            y = torch.from_numpy(dataset.factors_of(rows))
            logits = net(x)
            loss = sum(nn.functional.cross_entropy(lg, y[:, j]) for j, lg in enumerate(logits))
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        rows = rng.integers(0, dataset.num_rows, 2000)
        with torch.no_grad():
            logits = net(_as_float(dataset.images(rows)))
        y = dataset.factors_of(rows)
        accuracy = {
            name: float((lg.argmax(1).numpy() == y[:, j]).mean())
            for j, (name, lg) in enumerate(zip(dataset.factor_names, logits, strict=True))
        }
    finally:
        torch.set_num_threads(threads)
    return net, {"accuracy": accuracy}


def load_or_train_classifier(
    dataset: Any, data_key: str, settings: GenerationSettings, progress: bool = False
) -> tuple[FactorClassifier, dict[str, Any]]:
    """The cached classifier of this dataset content and these settings, trained on a miss."""
    fields = {k: v for k, v in asdict(settings).items() if k.startswith("classifier")}
    key = hashlib.sha256(
        json.dumps(
            {"data": data_key, **fields, "shape": list(dataset.observation_shape)}, sort_keys=True
        ).encode()
    ).hexdigest()[:16]
    path = cache_dir() / f"factor_classifier-{key}.pt"
    sizes = tuple(int(k) for k in dataset.factor_sizes)
    if path.exists():
        payload = torch.load(path, map_location="cpu", weights_only=False)
        net = FactorClassifier(dataset.observation_shape[0], sizes)
        net.load_state_dict(payload["state"])
        info = payload["info"]
    else:
        log.info("training the generation score's factor classifier (%d steps; cached at %s)",
                 settings.classifier_steps, path)  # fmt: skip
        net, info = train_classifier(dataset, settings, progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"state": net.state_dict(), "info": info}, tmp)
        os.replace(tmp, path)
    info = {**info, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "path": str(path)}
    return net.eval(), info


@torch.no_grad()
def _features(net: FactorClassifier, images: torch.Tensor, batch: int = 1024) -> np.ndarray:
    return torch.cat(
        [net.features(images[i : i + batch]) for i in range(0, len(images), batch)]
    ).numpy()


def generation_scores(
    generate: Any,
    dataset: Any,
    data_key: str,
    settings: GenerationSettings,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, float], dict[str, Any]]:
    """(scores, details) of ``generate(n, seed) -> images (n, C, H, W) float in [0, 1]``."""
    n = settings.num_samples
    generated = generate(n, seed)
    generated = torch.as_tensor(generated).float()
    expected = (n, *dataset.observation_shape)
    if tuple(generated.shape) != expected:
        raise ValueError(f"the generator returned {tuple(generated.shape)}, expected {expected}")
    if not torch.isfinite(generated).all():
        raise ValueError("the generator returned NaN or infinite pixels")
    rng = np.random.default_rng(seed)
    rows = rng.permutation(dataset.num_rows)[: 2 * n] if dataset.num_rows >= 2 * n else (
        rng.integers(0, dataset.num_rows, 2 * n))  # fmt: skip
    real_a = _as_float(dataset.images(np.sort(rows[:n])))
    real_b = _as_float(dataset.images(np.sort(rows[n:])))
    net, classifier = load_or_train_classifier(dataset, data_key, settings, progress)
    fa, fb, fg = (_features(net, x) for x in (real_a, real_b, generated))
    scores = {
        "swd": sliced_wasserstein(real_a, generated, settings.projections, seed),
        "swd_real": sliced_wasserstein(real_a, real_b, settings.projections, seed),
        "frechet": frechet_distance(fa, fg),
        "frechet_real": frechet_distance(fa, fb),
    }
    details = {"num_samples": n, "projections": settings.projections, "classifier": classifier}
    return scores, details
