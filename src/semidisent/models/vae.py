"""The VAE used by every method of the project: encoder, decoder, reparameterisation.

Objectives (ELBO, supervised regularisers, label replacement) live in
:mod:`semidisent.objectives`; the model only maps images to q(z|x) and latents to logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .architecture import ConvEncoder, DeconvDecoder, xavier_init_


@dataclass(frozen=True)
class VAEConfig:
    """Everything needed to rebuild the network (saved next to every model)."""

    in_channels: int = 1
    image_size: int = 64
    num_latent: int = 10
    encoder_kernel: int = 4
    init: str = "xavier"

    def to_dict(self) -> dict:
        return asdict(self)


class VAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        if config.image_size != 64:
            raise ValueError(
                f"the disentanglement_lib architecture takes 64x64 images, got {config.image_size}"
            )
        self.config = config
        self.encoder = ConvEncoder(config.in_channels, config.num_latent, config.encoder_kernel)
        self.decoder = DeconvDecoder(config.in_channels, config.num_latent)
        if config.init == "xavier":
            xavier_init_(self)

    @property
    def num_latent(self) -> int:
        return self.config.num_latent

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [0, 1], (N, C, 64, 64) -> (mean, log-variance) of q(z|x), each (N, num_latent)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, num_latent) -> Bernoulli logits (N, C, 64, 64)."""
        return self.decoder(z)

    @staticmethod
    def reparameterise(
        mean: torch.Tensor, log_var: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        return mean + torch.exp(0.5 * log_var) * eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The representation used by the metrics: the encoder mean."""
        return self.encode(x)[0]
