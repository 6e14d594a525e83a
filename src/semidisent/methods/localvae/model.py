"""The local-decoder VAE's objective (the authors' ``PixelVAE``; seed_models.md section 2.2):

    loss = mean_x [ -log p(x | z) + beta KL(q(z | x) || N(0, I)) ],  z = mu + sigma eps

with eps the batch's standard normals (``eps_u``: model.num_latent per example), the KL analytic,
log p(x | z) the pixel decoder's (``models/pixelcnn.py``, ``models/likelihoods.py``). beta = 1 is
the ELBO (the authors'); ``bits_per_dim`` = (recon + KL) / (C H W ln 2), the negative ELBO in bits
per dimension (the authors' reported unit). The labelled batch is not used (the M2 objective of
the same family is ``methods/psvae``'s M2 on a network with this decoder: method.py).
"""

from __future__ import annotations

import contextlib
import math
from typing import ClassVar

import torch
from torch import nn

from ...objectives.s2vae import ModelBatch
from .networks import LocalVAENetwork

# One layout for both objectives (the trainer asks for the names before the params): the vae's
# terms, then M2's labelled bound, log q(y_obs | x) and training error (0 for the vae); recon, kl
# and bits_per_dim are of the unlabelled batch.
STAT_NAMES = ("loss", "recon", "kl", "bits_per_dim", "elbo_l", "log_q_label", "train_error")


def gaussian_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(0, 1)) summed over the last dimension."""
    return 0.5 * (mean.square() + std.square() - 1.0 - 2.0 * torch.log(std)).sum(-1)


class LocalVAE(nn.Module):
    stat_names: ClassVar[tuple[str, ...]] = STAT_NAMES

    def __init__(self, network: LocalVAENetwork, amp_dtype: torch.dtype | None = None):
        super().__init__()
        self.network = network
        self.amp_dtype = amp_dtype

    def _amp(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=self.amp_dtype)

    def terms(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(-log p(x | z), KL) per example."""
        net = self.network
        with self._amp(x):
            mean, std = net.posterior(x)
            z = mean.float() + std.float() * eps
            h = net.features(z)
            params = net.pixel.params(x, h)
        # The likelihood in float32 even under autocast (sums of log masses over pixels).
        recon = -net.pixel.likelihood.log_prob(params.float(), x)
        return recon, gaussian_kl(mean.float(), std.float())

    def forward(
        self, batch: ModelBatch, hyper: dict[str, torch.Tensor], step: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        recon, kl = self.terms(batch.x_u, batch.eps_u)
        loss = (recon + hyper["beta"] * kl).mean()
        bpd = (recon + kl).mean() / (self.network.dims * math.log(2.0))
        zero = torch.zeros_like(loss)
        stats = torch.stack([loss, recon.mean(), kl.mean(), bpd, zero, zero, zero])
        return loss, stats.detach()


class LocalM2(nn.Module):
    """``methods/psvae``'s M2 on a network with a pixel decoder, its statistics in this family's
    layout (the unlabelled ELBO as bits per dimension)."""

    stat_names: ClassVar[tuple[str, ...]] = STAT_NAMES

    def __init__(self, m2: nn.Module):
        super().__init__()
        self.m2 = m2

    @property
    def network(self) -> nn.Module:
        return self.m2.network  # type: ignore[return-value]

    def forward(
        self, batch: ModelBatch, hyper: dict[str, torch.Tensor], step: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, stats = self.m2(batch, hyper, step)
        cfg = self.network.config  # type: ignore[union-attr]
        dims = cfg.in_channels * cfg.height * cfg.width
        bpd = -stats[3] / (dims * math.log(2.0))
        return loss, torch.cat([stats[:3], bpd[None], stats[4:]])
