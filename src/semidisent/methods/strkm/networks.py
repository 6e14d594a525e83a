"""The St-RKM network: encoder phi (x -> R^m), the Stiefel parameter U^T (l x m, orthonormal
rows, stored transposed as in the authors' ``manifold_param``), decoder psi (R^m -> logits) and
the statistics the post-training step fits (feature mean, the codes' Gaussian).

Its representation (what the metrics score) is h = U^T (phi(x) - mean); it decodes a code h as
psi(U h), the image as the sigmoid of the logits (the authors' decoder ends in a Sigmoid: the
same images). Before :func:`.model.fit_final` the mean is 0 and the Gaussian standard normal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ...models.architecture import ConvEncoder, DeconvDecoder, xavier_init_


@dataclass(frozen=True)
class StRKMConfig:
    in_channels: int = 1
    height: int = 64
    width: int = 64
    num_latent: int = 10
    feature_dim: int = 50
    hidden: int = 256
    network: str = "dlib"
    capacity: int = 64
    init: str = "xavier"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _DlibEncoder(nn.Module):
    """disentanglement_lib's conv trunk and FC 256, then a linear map to the m features."""

    def __init__(self, c: int, hidden: int, m: int):
        super().__init__()
        base = ConvEncoder(c, 1)
        self.convs = base.convs
        self.fc = nn.Linear(64 * 4 * 4, hidden)
        self.out = nn.Linear(hidden, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(self.convs(x).flatten(1))))


class _DlibDecoder(nn.Module):
    def __init__(self, c: int, hidden: int, m: int):
        super().__init__()
        self.net = DeconvDecoder(c, m)
        if hidden != 256:
            self.net.fc[0] = nn.Linear(m, hidden)
            self.net.fc[2] = nn.Linear(hidden, 64 * 4 * 4)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _paper_kwargs(h: int) -> tuple[dict, dict, int]:
    """The authors' conv settings: 4x4 s2 p1 twice, then 3x3 s1 to 5x5 (28x28) or 4x4 s2 p1
    to 8x8 (64x64)."""
    first = {"kernel_size": 4, "stride": 2, "padding": 1}
    if h <= 28:
        return first, {"kernel_size": 3, "stride": 1}, 5
    return first, first, 8


class _PaperEncoder(nn.Module):
    def __init__(self, c: int, h: int, hidden: int, m: int, cap: int):
        super().__init__()
        a, b, s = _paper_kwargs(h)
        act = nn.LeakyReLU(0.2)
        self.main = nn.Sequential(
            nn.Conv2d(c, cap, **a), act, nn.Conv2d(cap, 2 * cap, **a), act,
            nn.Conv2d(2 * cap, 4 * cap, **b), act, nn.Flatten(),
            nn.Linear(4 * cap * s * s, hidden), act, nn.Linear(hidden, m),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class _PaperDecoder(nn.Module):
    """The mirror image, ending in logits (the authors' Sigmoid is applied by the loss)."""

    def __init__(self, c: int, h: int, hidden: int, m: int, cap: int):
        super().__init__()
        a, b, s = _paper_kwargs(h)
        act = nn.LeakyReLU(0.2)
        self.cap, self.s = cap, s
        self.fc = nn.Sequential(nn.Linear(m, hidden), act, nn.Linear(hidden, 4 * cap * s * s), act)
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(4 * cap, 2 * cap, **b), act,
            nn.ConvTranspose2d(2 * cap, cap, **a), act,
            nn.ConvTranspose2d(cap, c, **a),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconvs(self.fc(z).view(-1, 4 * self.cap, self.s, self.s))


class StRKMNetwork(nn.Module):
    def __init__(self, config: StRKMConfig):
        super().__init__()
        c, h, w, m = config.in_channels, config.height, config.width, config.feature_dim
        if config.num_latent > m:
            raise ValueError(
                f"St-RKM needs num_latent <= feature_dim, got {config.num_latent} > {m}"
            )
        if config.network == "dlib":
            if (h, w) != (64, 64):
                raise ValueError(f"the dlib networks take 64x64 images, got {h}x{w}")
            self.encoder: nn.Module = _DlibEncoder(c, config.hidden, m)
            self.decoder: nn.Module = _DlibDecoder(c, config.hidden, m)
        elif config.network == "paper":
            if h != w or h not in (28, 64):
                raise ValueError(f"the paper networks take 64x64 or 28x28 images, got {h}x{w}")
            self.encoder = _PaperEncoder(c, h, config.hidden, m, config.capacity)
            self.decoder = _PaperDecoder(c, h, config.hidden, m, config.capacity)
        else:
            raise ValueError(f"unknown St-RKM network {config.network!r}")
        self.config = config
        if config.init == "xavier":
            xavier_init_(self)
        # U^T, initialised like the authors' nn.init.orthogonal_.
        self.u_t = nn.Parameter(nn.init.orthogonal_(torch.empty(config.num_latent, m)))
        self.register_buffer("feature_mean", torch.zeros(m))
        self.register_buffer("code_mean", torch.zeros(config.num_latent))
        self.register_buffer("code_cov", torch.eye(config.num_latent))

    @property
    def num_latent(self) -> int:
        return self.config.num_latent

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h = U^T (phi(x) - mean), zeros): the second output keeps the VAE's ``encode`` shape
        (a deterministic code: no variance)."""
        h = (self.features(x) - self.feature_mean) @ self.u_t.T
        return h, torch.zeros_like(h)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) of psi(U h)."""
        cfg = self.config
        return self.decoder(h @ self.u_t).view(-1, cfg.in_channels, cfg.height, cfg.width)

    def sample_codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """h ~ the Gaussian fitted to the training codes (the authors' 1-component full
        GaussianMixture)."""
        cov = self.code_cov.double()
        chol = torch.linalg.cholesky(cov)
        eps = torch.randn(n, self.num_latent, generator=generator, dtype=torch.float64)
        return (self.code_mean.double() + eps @ chol.T).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]
