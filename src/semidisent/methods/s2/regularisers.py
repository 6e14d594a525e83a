"""The unsupervised regularisers of disentanglement_lib's VAE family (``methods/unsupervised/
vae.py``), as pure functions of one batch's encoder outputs. With mu, v (B, L) the encoder
mean / log-variance, z the sample:

    total_correlation:  mean_j [ log q(z_j) - sum_l log q(z_jl) ]  by minibatch-weighted
                        sampling, log q(z_j) = logsumexp_i sum_l log N(z_jl; mu_il, e^v_il),
                        log q(z_jl) = logsumexp_i log N(z_jl; mu_il, e^v_il), the -log(NM)
                        constants dropped (beta-TCVAE, Chen et al. 2018)
    covariance_of_mean: E[mu mu^T] - E[mu] E[mu]^T  (biased, over the batch)
    dip_regulariser:    lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2  (DIP-VAE)
    capacity:           min(c_max, c_max * step / iteration_threshold)  (AnnealedVAE's C)
    shuffle_codes:      each latent dimension permuted independently across the batch
                        (FactorVAE's samples of the product of the marginals)
"""

from __future__ import annotations

import math

import torch


def gaussian_log_density(samples: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor):
    """log N(samples; mean, exp(log_var)) elementwise (broadcasting)."""
    tmp = samples - mean
    return -0.5 * (tmp * tmp * torch.exp(-log_var) + log_var + math.log(2.0 * math.pi))


def total_correlation(z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """disentanglement_lib's ``total_correlation`` (minibatch-weighted, constants dropped)."""
    log_qz_prob = gaussian_log_density(z[:, None, :], mean[None], log_var[None])  # [j, i, l]
    log_qz_product = torch.logsumexp(log_qz_prob, dim=1).sum(1)
    log_qz = torch.logsumexp(log_qz_prob.sum(2), dim=1)
    return (log_qz - log_qz_product).mean()


def covariance_of_mean(mean: torch.Tensor) -> torch.Tensor:
    """cov(mu) = E[mu mu^T] - E[mu] E[mu]^T over the batch (biased), (L, L)."""
    outer = (mean[:, :, None] * mean[:, None, :]).mean(0)
    m = mean.mean(0)
    return outer - m[:, None] * m[None, :]


def dip_regulariser(
    cov: torch.Tensor, lambda_od: torch.Tensor | float, lambda_d: torch.Tensor | float
) -> torch.Tensor:
    diagonal = torch.diagonal(cov)
    off = cov - torch.diag_embed(diagonal)
    return lambda_od * off.square().sum() + lambda_d * (diagonal - 1.0).square().sum()


def capacity(
    c_max: torch.Tensor, step: torch.Tensor, iteration_threshold: torch.Tensor
) -> torch.Tensor:
    s = step.to(c_max.dtype)
    return torch.minimum(c_max, c_max * s / iteration_threshold.to(c_max.dtype))


def permutations(uniforms: torch.Tensor, rows: int) -> torch.Tensor:
    """Independent random permutations of ``rows`` items, one per row of ``uniforms`` viewed as
    (-1, rows): the argsort of i.i.d. uniforms is a uniformly random permutation."""
    return torch.argsort(uniforms.reshape(-1, rows), dim=1)


def shuffle_codes(z: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """z (B, L) with each column permuted by its own permutation (``uniforms``: B * L)."""
    perm = permutations(uniforms, z.shape[0])  # (L, B)
    return torch.gather(z, 0, perm.T)
