"""cov: sum of squared off-diagonal entries of the cross-covariance of the code and the labels.

With mu (B, L) the WHOLE encoder mean (dlib passes every latent, not just the first F) and the
raw float labels y (B, F) (dlib's code does not normalise them, although its docstring says
[0, 1]):

    C_di = mean_b (mu_bd - mean_b mu_bd) (y_bi - mean_b y_bi)        (L x F)
    R_s  = sum_{d != i} C_di^2

It pushes latent d to be uncorrelated with every factor but factor d. The covariance is a batch
MEAN, so the loss does not grow with the batch and ``sup_reduction`` does not change it.
Partial labels: C_di uses the rows where factor i is observed (means over those rows too); a
factor observed in no row contributes 0. Fully observed, this is dlib's value exactly.

cov fixes neither the location nor the scale of latent d, so any increasing t(y) is consistent;
the one chosen is the Gaussian quantile Phi^-1((y + 0.5) / k), which matches the N(0, 1) prior.
"""

from __future__ import annotations

import torch

from .base import SupervisedLoss


class CovLoss(SupervisedLoss):
    name = "cov"
    consistent_target = "gaussian"

    def forward(
        self, mean: torch.Tensor, labels: torch.Tensor, observed: torch.Tensor
    ) -> torch.Tensor:
        mu = mean.float()  # (B, L)
        y = self.clean_labels(labels)  # (B, F)
        obs = observed.to(mu.dtype)
        n = obs.sum(0).clamp(min=1.0)  # (F,)
        mu_mean = (mu.T @ obs) / n  # (L, F): mean of latent d over the rows observing factor i
        y_mean = (obs * y).sum(0) / n  # (F,)
        centred = (mu[:, :, None] - mu_mean[None]) * ((y - y_mean) * obs)[:, None, :]  # (B, L, F)
        cov = centred.sum(0) / n  # (L, F)
        d = min(cov.shape)
        off = cov.square().sum() - cov.diagonal()[:d].square().sum()
        return off
