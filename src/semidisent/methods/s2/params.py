"""The params.yaml sections of the semi-supervised family's members that have keys of their own
(the shared ones, beta, gamma_sup, the supervised regulariser and label replacement, are in
``train``). Defaults are disentanglement_lib's study values (``config/unsupervised_study_v1``):
FactorVAE's discriminator Adam (lr 1e-4, betas 0.5 / 0.9), DIP-VAE's lambda_d_factor (10 for
type i, 1 for type ii: set it with the type), AnnealedVAE's gamma 1000 and threshold 100,000.
Torch-free: the params schema imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config.validation import between, check, non_negative, positive


@dataclass(frozen=True)
class FactorVAEParams:
    """s2_factor_vae: recon + KL + gamma * TC (discriminator estimate) + gamma_sup * R_s."""

    # Weight of the total-correlation estimate (dlib's grid: 10, 20, 30, 40, 50, 100).
    gamma: float = field(default=10.0, metadata=check(non_negative))
    # The discriminator's own Adam (dlib: lr 1e-4, beta1 0.5, beta2 0.9, eps 1e-8).
    discriminator_lr: float = field(default=1e-4, metadata=check(positive))
    discriminator_beta1: float = field(default=0.5, metadata=check(between(0, 1, hi_open=True)))
    discriminator_beta2: float = field(default=0.9, metadata=check(between(0, 1, hi_open=True)))
    # Hidden layers x units of the discriminator (dlib's fc_discriminator: 6 x 1000).
    discriminator_layers: int = field(default=6, metadata=check(positive))
    discriminator_units: int = field(default=1000, metadata=check(positive))


@dataclass(frozen=True)
class DIPVAEParams:
    """s2_dip_vae: recon + KL + lambda_od * sum offdiag(C)^2 + lambda_d * sum (diag(C) - 1)^2
    + gamma_sup * R_s, with C = cov(mu) (type i) or cov(mu) + E[diag exp(v)] (type ii)."""

    dip_type: Literal["i", "ii"] = "i"
    # dlib's grid: 1, 2, 5, 10, 20, 50.
    lambda_od: float = field(default=10.0, metadata=check(non_negative))
    # lambda_d = lambda_d_factor * lambda_od (dlib: 10 for type i, 1 for type ii).
    lambda_d_factor: float = field(default=10.0, metadata=check(non_negative))


@dataclass(frozen=True)
class AnnealedVAEParams:
    """s2_annealed_vae: recon + gamma * |KL - C(step)| + gamma_sup * R_s, with the capacity
    C(step) = min(c_max, c_max * step / iteration_threshold) (Burgess et al.'s schedule)."""

    gamma: float = field(default=1000.0, metadata=check(non_negative))
    # dlib's grid: 5, 10, 25, 50, 75, 100 (nats).
    c_max: float = field(default=25.0, metadata=check(non_negative))
    iteration_threshold: int = field(default=100000, metadata=check(positive))


@dataclass(frozen=True)
class MineVAEParams:
    """s2_mine_vae: recon + beta * KL + gamma_sup * sum_{l != r} MI(mu_r, y_l)^2, each MI
    estimated by a small MINE network trained alongside (dlib: Adam lr 0.01)."""

    estimator_lr: float = field(default=0.01, metadata=check(positive))
    estimator_units: int = field(default=20, metadata=check(positive))
