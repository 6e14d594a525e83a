"""The local-decoder VAE's network: encoder q(z|x) = N(mu, diag softplus(.)^2), the ordinary
decoder z -> h(z) at full resolution, and the pixel decoder after it (``models/pixelcnn.py``).

- ``mlp`` (any image size; the authors' MNIST networks without batch normalisation): encoder
  C*H*W -> hidden -> hidden -> 2 L, decoder L -> hidden -> hidden -> F*H*W (their
  ``densenet_decoder`` with F = decoder_channels = 16);
- ``conv`` (64x64: dSprites and the other grids): disentanglement_lib's encoder and decoder (the
  project's standard networks) with F output channels.

Its representation (what the probes and the metrics score) is the encoder mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.functional import softplus

from ...models.architecture import ConvEncoder, DeconvDecoder, xavier_init_
from ...models.pixelcnn import PixelDecoder, PixelDecoderConfig

MIN_STD = 1e-4


@dataclass(frozen=True)
class LocalVAEConfig:
    in_channels: int = 1
    height: int = 28
    width: int = 28
    num_latent: int = 32
    network: str = "mlp"
    hidden: int = 500
    pixel: dict[str, Any] = field(default_factory=dict)  # PixelDecoderConfig.to_dict()
    init: str = "xavier"
    # The evaluations of the trained network ("probes", and "factor_metrics" on factor grids).
    evaluations: tuple[str, ...] = ("probes",)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ordinary_decoder(
    network: str, code: int, hidden: int, out: int, shape: tuple[int, int, int]
) -> nn.Module:
    """z (N, code) -> (N, out * H * W) (mlp) or (N, out, 64, 64) (conv)."""
    _, h, w = shape
    if network == "conv":
        if (h, w) != (64, 64):
            raise ValueError(f"the conv networks take 64x64 images, got {h}x{w}")
        return DeconvDecoder(out, code)
    return nn.Sequential(
        nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, out * h * w),
    )  # fmt: skip


class LocalVAENetwork(nn.Module):
    def __init__(self, config: LocalVAEConfig):
        super().__init__()
        self.config = config
        c, h, w, lat = config.in_channels, config.height, config.width, config.num_latent
        self.pixel = PixelDecoder(PixelDecoderConfig(**config.pixel))
        if config.network == "conv":
            if (h, w) != (64, 64):
                raise ValueError(f"the conv networks take 64x64 images, got {h}x{w}")
            self.encoder: nn.Module = ConvEncoder(c, lat)
        elif config.network == "mlp":
            self.encoder = nn.Sequential(
                nn.Flatten(), nn.Linear(c * h * w, config.hidden), nn.ReLU(),
                nn.Linear(config.hidden, config.hidden), nn.ReLU(),
                nn.Linear(config.hidden, 2 * lat),
            )  # fmt: skip
        else:
            raise ValueError(f"unknown network {config.network!r}")
        self.decoder = ordinary_decoder(
            config.network, lat, config.hidden, self.pixel.feature_channels, (c, h, w)
        )
        if config.init == "xavier":
            xavier_init_(self)

    @property
    def num_latent(self) -> int:
        return self.config.num_latent

    @property
    def dims(self) -> int:
        return self.config.in_channels * self.config.height * self.config.width

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of q(z | x)."""
        if self.config.network == "conv":
            mean, raw = self.encoder(x)
        else:
            mean, raw = self.encoder(x).chunk(2, dim=-1)
        return mean, softplus(raw) + MIN_STD

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z | x): the VAE's ``encode``."""
        mean, std = self.posterior(x)
        return mean, 2.0 * torch.log(std)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """h(z): (N, F, H, W)."""
        cfg = self.config
        return self.decoder(z).view(z.shape[0], -1, cfg.height, cfg.width)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per example (N,) for x in [0, 1]."""
        return self.pixel.log_prob(x, self.features(z))

    @torch.no_grad()
    def sample(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.pixel.sample(self.features(z), generator)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits whose sigmoid is the picture of z: the likelihood's mean (factorised) or one
        autoregressive sample (seeded 0: the same codes give the same pictures), so every
        generic picture and the generation evaluation (sigmoid of ``decode``) show this model's
        images."""
        picture = self.pixel.picture(self.features(z), torch.Generator().manual_seed(0))
        return torch.logit(picture.clamp(1e-4, 1.0 - 1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]
