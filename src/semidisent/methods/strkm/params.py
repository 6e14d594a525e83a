"""The ``st_rkm`` params.yaml section (docs/strkm.md). Defaults are the authors' ``train_rkm.py``
(feature size 50, hidden 256, noise 1e-3, c_accu 1, Cayley ADAM lr 1e-4), except the networks:
``dlib`` (default) puts the objective on the disentanglement_lib encoder / decoder every other
family here uses, so that comparisons isolate the objective; ``paper`` is the authors'
capacity-64 LeakyReLU networks. Networks train with Adam at train.lr (the authors: 2e-4).
Torch-free: the params schema imports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config.validation import check, non_negative, positive

# The reference's --loss names, for the docs and error messages.
VARIANT_CODE_NAMES = {"deterministic": "deterministic", "noisy_u": "noisyU", "split": "splitloss"}


@dataclass(frozen=True)
class StRKMParams:
    """st_rkm: Stiefel restricted kernel machine (PCA error in feature space + autoencoder)."""

    # deterministic (sigma = 0): x ~ psi(U U^T phi); noisy_u: psi(U (U^T phi + sigma eps));
    # split: the deterministic error + ||psi(U U^T phi) - psi(U (U^T phi + sigma eps))||^2.
    variant: Literal["deterministic", "noisy_u", "split"] = "split"
    # sigma of the noisy variants.
    noise_level: float = field(default=1e-3, metadata=check(non_negative))
    # Weight of the autoencoder error against the PCA error (the paper's lambda ~ 2 / c_accu).
    c_accu: float = field(default=1.0, metadata=check(positive))
    # Feature size m of phi(x) (x_fdim2); the latent size l is model.num_latent (<= m).
    feature_dim: int = field(default=50, metadata=check(positive))
    # The fully connected layer before the features (x_fdim1).
    hidden: int = field(default=256, metadata=check(positive))
    network: Literal["dlib", "paper"] = "dlib"
    # Channels of the paper network's first conv (doubled twice).
    capacity: int = field(default=64, metadata=check(positive))
    # Cayley ADAM's learning rate for U (one value per batched run).
    u_lr: float = field(default=1e-4, metadata=check(positive))
    # Rows whose features give the exact U after training (0: every row of the dataset; the
    # authors use every row: on dSprites' 737,280 that is ~15x the evaluation's encoder work).
    final_rows: int = field(default=50_000, metadata=check(non_negative))

    def validate(self, prefix: str) -> None:
        return None
