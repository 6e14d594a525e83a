"""The beta-VAE ELBO with the Bernoulli likelihood (disentanglement_lib ``vae.py`` /
``losses.py``; METHODS.md section 3).

For a batch of N images x_n with decoder logits l_n and encoder q(z|x_n) = N(mu_n, diag(exp(v_n))):

    recon_n = sum_pixels [ max(l, 0) - l * x + log(1 + exp(-|l|)) ]     (sigmoid cross-entropy)
    kl_nd   = 0.5 * (mu_nd^2 + exp(v_nd) - v_nd - 1)                     (per latent d)
    loss    = mean_n recon_n + beta * mean_n sum_d kl_nd

Targets x are the [0, 1] images (fractional for colour / noisy variants), as in dlib. Both terms
are computed in float32 even under bf16 autocast: the sums over 4096 pixels lose too much in bf16.
"""

from __future__ import annotations

import torch
from torch.nn.functional import binary_cross_entropy_with_logits


def bernoulli_reconstruction(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-example sigmoid cross-entropy summed over pixels: (N, ...) -> (N,)."""
    return (
        binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
        .flatten(1)
        .sum(1)
    )


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, 1)) per example and latent: (N, L) -> (N, L)."""
    mean, log_var = mean.float(), log_var.float()
    return 0.5 * (mean.square() + log_var.exp() - log_var - 1.0)


def beta_vae_loss(
    logits: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    log_var: torch.Tensor,
    beta: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, recon, kl): mean_n recon_n, mean_n sum_d kl_nd, and recon + beta * kl."""
    recon = bernoulli_reconstruction(logits, x).mean()
    kl = gaussian_kl(mean, log_var).sum(1).mean()
    return recon + beta * kl, recon, kl
