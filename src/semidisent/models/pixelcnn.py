"""Masked convolutions and the PixelCNN decoders of the local-decoder VAE (Zhang, Xiao, Paige &
Barber 2022; the authors' ``pixelcnn.py``), conditioned on a full-resolution feature map h(z).

    p(x | z) = prod_i p(x_i | x_{W(i)}, h_i(z))

- ``local`` (l in {1, 3, 5}): one type-A masked (2l+1)x(2l+1) convolution of the image (the pixels
  above within l rows and to the left within l columns, never pixel i itself), a 1x1 convolution
  of h(z), concatenated, ReLU, then residual blocks of 1x1 convolutions only, so the receptive
  field W(i) stays that window (the authors' ``single_local_layer=True``; their stacked variant
  does not run as released, seed_models.md 2.5);
- ``full``: a 7x7 type-A input convolution and residual blocks of 3x3 type-B masked convolutions
  (the authors' ``FullPixelCNN``): most of the image is visible and the decoder may ignore z;
- ``factorised``: no PixelCNN, the likelihood's parameters are h(z) itself (the plain VAE).

Masks are spatial (PixelCNN++'s): a pixel's channels depend on each other through the
likelihood ("ca"), not through the masks; a 1x1 type-B mask is all ones, so the 1x1 layers are
ordinary convolutions. The mask multiplies the weight inside ``forward`` (autograd-clean and
vmap-safe; the authors multiply ``weight.data`` in place). No batch normalisation (the authors
turn it off in the PixelCNN; a pure, vmapped training step has no running statistics).

Sampling (:meth:`PixelDecoder.sample`) is autoregressive in raster order and batched over
images. A pixel's parameters depend only on the rows r - R .. r and columns c - R .. c + R
(R = :attr:`radius`: l for ``local``, 3 + res_blocks for ``full``), so each step evaluates the
network on that crop of the image (clipped to the image, so the image edges keep their own zero
padding) instead of the whole image: exact (tests/test_localvae.py), and per pixel O(l^2)
instead of O(H W) for the local decoders.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.functional import conv2d

from .likelihoods import PixelLikelihood

DECODERS = ("factorised", "local", "full")
LOCAL_SIZES = (1, 3, 5)
FULL_KERNEL = 7


def causal_mask(kernel: int, kind: str) -> torch.Tensor:
    """(kernel, kernel) of 0/1: the rows above the centre, and the centre row left of the centre
    (type A) or up to and including it (type B)."""
    if kind not in ("A", "B"):
        raise ValueError(f"mask type must be A or B, got {kind!r}")
    mask = torch.ones(kernel, kernel)
    c = kernel // 2
    mask[c, c + (1 if kind == "B" else 0) :] = 0
    mask[c + 1 :] = 0
    return mask


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded convolution whose kernel is multiplied by :func:`causal_mask`."""

    def __init__(self, c_in: int, c_out: int, kernel: int, kind: str):
        super().__init__(c_in, c_out, kernel, padding=kernel // 2)
        self.register_buffer("mask", causal_mask(kernel, kind)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class ResidualBlock(nn.Module):
    """y + 1x1(ReLU(masked k x k (ReLU(y)))); k = 1 keeps the receptive field where it is."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.conv = MaskedConv2d(channels, channels, kernel, "B") if kernel > 1 else None
        self.pointwise = nn.Conv2d(channels, channels, 1)
        if self.conv is None:
            self.first = nn.Conv2d(channels, channels, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        inner = self.conv if self.conv is not None else self.first
        return y + self.pointwise(torch.relu(inner(torch.relu(y))))


class PixelCNN(nn.Module):
    """The masked network: image (N, C, H, W) in [-1, 1] and h(z) (N, F, H, W) -> likelihood
    parameters (N, P, H, W)."""

    def __init__(
        self,
        in_channels: int,
        feature_channels: int,
        channels: int,
        out_channels: int,
        kind: str,
        local_size: int = 1,
        res_blocks: int = 5,
    ):
        super().__init__()
        if kind == "local":
            if local_size < 1:
                raise ValueError(f"local_size must be >= 1, got {local_size}")
            kernel, block_kernel = 2 * local_size + 1, 1
            self.radius = local_size
        elif kind == "full":
            kernel, block_kernel = FULL_KERNEL, 3
            self.radius = FULL_KERNEL // 2 + res_blocks
        else:
            raise ValueError(f"PixelCNN kind must be local or full, got {kind!r}")
        half = max(channels // 2, 1)
        self.image_conv = MaskedConv2d(in_channels, half, kernel, "A")
        self.feature_conv = nn.Conv2d(feature_channels, half, 1)
        self.blocks = nn.Sequential(
            *(ResidualBlock(2 * half, block_kernel) for _ in range(res_blocks))
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(2 * half, 2 * half, 1),
            nn.ReLU(),
            nn.Conv2d(2 * half, out_channels, 1),
        )

    def forward(self, x: torch.Tensor, h: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """``repeat``: h holds ``repeat`` feature maps per image (h rows = repeat x N, image-major
        blocks of N), so the image's masked convolution runs once (M2's enumerated classes)."""
        image = self.image_conv(x)
        if repeat > 1:
            image = image.repeat(repeat, 1, 1, 1)
        y = torch.relu(torch.cat([image, self.feature_conv(h)], 1))
        return self.head(self.blocks(y))


@dataclass(frozen=True)
class PixelDecoderConfig:
    """The decoder after h(z): which PixelCNN (if any) and which likelihood."""

    in_channels: int = 1
    height: int = 28
    width: int = 28
    decoder: str = "local"
    local_size: int = 1
    likelihood: str = "logistic_mixture"
    channel_mode: str = "ci"
    mixtures: int = 10
    # Channels of h(z) fed to a PixelCNN (the authors' decoder_channels: 16 for MNIST).
    feature_channels: int = 16
    pixel_channels: int = 64
    res_blocks: int = 5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PixelDecoder(nn.Module):
    """The likelihood p(x | h(z)) after the ordinary decoder: a PixelCNN (``local`` / ``full``)
    or nothing (``factorised``), then :class:`PixelLikelihood`."""

    def __init__(self, config: PixelDecoderConfig):
        super().__init__()
        if config.decoder not in DECODERS:
            raise ValueError(
                f"decoder must be one of {', '.join(DECODERS)}, got {config.decoder!r}"
            )
        self.config = config
        self.likelihood = PixelLikelihood(
            config.likelihood, config.in_channels, config.mixtures, config.channel_mode
        )
        self.cnn: PixelCNN | None = None
        if config.decoder != "factorised":
            self.cnn = PixelCNN(
                config.in_channels,
                config.feature_channels,
                config.pixel_channels,
                self.likelihood.channels,
                config.decoder,
                config.local_size,
                config.res_blocks,
            )

    @property
    def autoregressive(self) -> bool:
        return self.cnn is not None

    @property
    def feature_channels(self) -> int:
        """Channels the ordinary decoder must produce: h(z), or the likelihood's parameters."""
        return self.config.feature_channels if self.cnn is not None else self.likelihood.channels

    def params(self, x: torch.Tensor, h: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """Likelihood parameters (repeat N, P, H, W) for x in [0, 1] (N, C, H, W)."""
        if self.cnn is None:
            return h
        return self.cnn(2.0 * x - 1.0, h, repeat)

    def log_prob(self, x: torch.Tensor, h: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """log p(x | h) per feature map (repeat N,), x (N, C, H, W) in [0, 1]."""
        xs = x.repeat(repeat, 1, 1, 1) if repeat > 1 else x
        return self.likelihood.log_prob(self.params(x, h, repeat), xs)

    @torch.no_grad()
    def sample(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One image per feature map (N, C, H, W) in [0, 1]: raster order for a PixelCNN (each
        pixel from its crop, see the module docstring), all pixels at once when factorised."""
        cfg = self.config
        n, hh, ww = h.shape[0], cfg.height, cfg.width
        if self.cnn is None:
            params = h.permute(0, 2, 3, 1).reshape(n * hh * ww, -1)
            pixels = self.likelihood.sample_pixel(params, generator)
            return pixels.view(n, hh, ww, cfg.in_channels).permute(0, 3, 1, 2).contiguous()
        r_ = self.cnn.radius
        x = torch.zeros(n, cfg.in_channels, hh, ww, device=h.device, dtype=h.dtype)
        for r in range(hh):
            r0 = max(0, r - r_)
            for c in range(ww):
                c0, c1 = max(0, c - r_), min(ww, c + r_ + 1)
                crop = self.cnn(2.0 * x[:, :, r0 : r + 1, c0:c1] - 1.0, h[:, :, r0 : r + 1, c0:c1])
                x[:, :, r, c] = self.likelihood.sample_pixel(crop[:, :, r - r0, c - c0], generator)
        return x

    @torch.no_grad()
    def sample_naive(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """:meth:`sample` with the whole image through the network at every pixel (the
        definition the crops must equal; tests only: O(H W) times slower)."""
        assert self.cnn is not None
        cfg = self.config
        x = torch.zeros(h.shape[0], cfg.in_channels, cfg.height, cfg.width, dtype=h.dtype)
        for r in range(cfg.height):
            for c in range(cfg.width):
                params = self.cnn(2.0 * x - 1.0, h)[:, :, r, c]
                x[:, :, r, c] = self.likelihood.sample_pixel(params, generator)
        return x

    def picture(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """What pictures show for h: the mean of a factorised likelihood, else one sample."""
        if self.cnn is None:
            return self.likelihood.mean(h)
        return self.sample(h, generator)
