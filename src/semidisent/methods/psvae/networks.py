"""The networks of a partially-specified VAE, built from its specification (:mod:`.spec`).

- a trunk h(x): ``mlp`` (flatten, dense ``hidden``, ReLU: the reference notebook's 784-256
  encoder, any image size) or ``conv`` (disentanglement_lib's four stride-2 convolutions and
  a dense 256, for 64x64 images);
- one head per variable in q's order, reading [h(x), values of its q parents]: logits of a
  categorical (dense k), or the mean and log standard deviation of a gaussian (dense 2d; the
  notebook's two dense layers side by side);
- one prior head per gaussian with p parents (dense 2d on the parents' values); the others have
  N(0, I) or the uniform categorical prior;
- a decoder p(x | every variable) from the variables' values side by side (declared order):
  ``mlp`` dense ``hidden``, ReLU, dense C*H*W (the notebook's 60-256-784), or ``conv``
  disentanglement_lib's deconvolution stack; Bernoulli logits.

:class:`PSNetwork` is what the model file holds (``Method.export``); its ``encode`` gives the
deterministic representation the metrics score: each categorical's probabilities q(y | x) and
each gaussian's mean, with parents taking their deterministic values (probabilities, means).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ...models.architecture import DeconvDecoder, xavier_init_
from ...models.pixelcnn import PixelDecoder, PixelDecoderConfig
from ...objectives.elbo import bernoulli_reconstruction
from .spec import Specification, Variable


@dataclass(frozen=True)
class PSNetworkConfig:
    """Everything that rebuilds the network (saved in the model file)."""

    in_channels: int
    height: int
    width: int
    spec: dict[str, Any] = field(default_factory=dict)  # Specification.to_dict()
    # Values of each label column (the standardised value of a supervised gaussian needs it).
    label_sizes: tuple[int, ...] = ()
    network: str = "mlp"
    hidden: int = 256
    init: str = "xavier"
    # Concrete temperature of the relaxed samples (training; test-time inference samples too).
    temperature: float = 0.66
    # A pixel decoder after the decoder (models/pixelcnn.py PixelDecoderConfig.to_dict(): the
    # local-decoder M2 of methods/localvae); empty: the decoder's Bernoulli logits.
    pixel: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def specification(self) -> Specification:
        return Specification.from_dict(self.spec)


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)


class PSNetwork(nn.Module):
    def __init__(self, config: PSNetworkConfig):
        super().__init__()
        self.config = config
        self.spec = spec = config.specification
        c, h, w = config.in_channels, config.height, config.width
        self.pixel = PixelDecoder(PixelDecoderConfig(**config.pixel)) if config.pixel else None
        # The decoder's output channels: Bernoulli logits, or h(z) for the pixel decoder.
        out = self.pixel.feature_channels if self.pixel is not None else c
        if config.network == "conv":
            if (h, w) != (64, 64):
                raise ValueError(f"the conv networks take 64x64 images, got {h}x{w}")
            self.trunk = nn.Sequential(
                _conv(c, 32), nn.ReLU(), _conv(32, 32), nn.ReLU(),
                _conv(32, 64), nn.ReLU(), _conv(64, 64), nn.ReLU(),
                nn.Flatten(), nn.Linear(64 * 4 * 4, config.hidden), nn.ReLU(),
            )  # fmt: skip
            self.decoder: nn.Module = DeconvDecoder(out, spec.code_size)
        else:
            self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, config.hidden), nn.ReLU())
            self.decoder = nn.Sequential(
                nn.Linear(spec.code_size, config.hidden),
                nn.ReLU(),
                nn.Linear(config.hidden, out * h * w),
            )
        self.heads = nn.ModuleDict()
        self.priors = nn.ModuleDict()
        for v in spec.variables:
            fan_in = config.hidden + sum(spec.variable(p).size for p in v.q_parents)
            self.heads[v.name] = nn.Linear(fan_in, v.size if v.categorical else 2 * v.size)
            if v.p_parents:
                parents = sum(spec.variable(p).size for p in v.p_parents)
                self.priors[v.name] = nn.Linear(parents, 2 * v.size)
        if config.init == "xavier":
            xavier_init_(self)

    # -- pieces the objective and the inference call ----------------------------------------
    @property
    def num_latent(self) -> int:
        return self.spec.code_size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h(x): (N, C, H, W) -> (N, hidden)."""
        return self.trunk(x)

    def head(
        self, v: Variable, h: torch.Tensor, values: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """q's parameters of ``v`` given h (..., hidden) and the parents' values: (logits, None)
        or (mean, log_std), each (..., size)."""
        inputs = [h, *(values[p] for p in v.q_parents)]
        out = self.heads[v.name](torch.cat(inputs, -1) if len(inputs) > 1 else h)
        if v.categorical:
            return out, None
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std

    def prior(
        self, v: Variable, values: dict[str, torch.Tensor], like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """p's (mean, log_std) of a gaussian ``v`` (N(0, I) without p parents)."""
        if not v.p_parents:
            zero = torch.zeros_like(like)
            return zero, zero
        out = self.priors[v.name](torch.cat([values[p] for p in v.p_parents], -1))
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits (N, C, H, W) from the variables' values side by side (N, code); with
        a pixel decoder, logits whose sigmoid is its picture (one seeded autoregressive sample)."""
        cfg = self.config
        if self.pixel is not None:
            with torch.no_grad():
                h = self.decoder(code).view(code.shape[0], -1, cfg.height, cfg.width)
                picture = self.pixel.picture(h, torch.Generator().manual_seed(0))
            return torch.logit(picture.clamp(1e-4, 1.0 - 1e-4))
        return self.decoder(code).view(-1, cfg.in_channels, cfg.height, cfg.width)

    def log_likelihood(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """log p(x | values) (S, N) for images x (N, C, H, W) and values (S, N, code)."""
        s, n = code.shape[:2]
        cfg = self.config
        if self.pixel is not None:
            h = self.decoder(code.flatten(0, 1)).view(s * n, -1, cfg.height, cfg.width)
            # The image's masked convolution once for the S codes of each example.
            params = self.pixel.params(x, h, repeat=s)
            # The likelihood in float32 even under autocast (sums of log masses over pixels).
            with torch.autocast(x.device.type, enabled=False):
                xs = x.repeat(s, 1, 1, 1)
                return self.pixel.likelihood.log_prob(params.float(), xs.float()).view(s, n)
        logits = self.decode(code.flatten(0, 1)).float()
        xs = x.expand(s, *x.shape).flatten(0, 1)
        return -bernoulli_reconstruction(logits, xs).view(s, n)

    def code(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([values[v.name] for v in self.spec.variables], -1)

    # -- the representation -----------------------------------------------------------------
    def deterministic(self, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per variable (value, q parameters): probabilities and logits of a categorical, mean
        and log_std of a gaussian, parents at their deterministic values."""
        h = self.features(x)
        values: dict[str, torch.Tensor] = {}
        out = {}
        for v in self.spec.variables:
            a, b = self.head(v, h, values)
            values[v.name] = torch.softmax(a, -1) if v.categorical else a
            out[v.name] = (values[v.name], a if b is None else b)
        return out

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(representation, zeros): categorical probabilities and gaussian means side by side;
        the second output keeps the VAE's ``encode`` shape (metrics read the first)."""
        code = self.code({k: value for k, (value, _) in self.deterministic(x).items()})
        return code, torch.zeros_like(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]
