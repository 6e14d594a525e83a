"""The DRMM's network: one set of weights read two ways (seed_models.md section 4.2).

Bottom-up (max-sum inference, the E-step) is an ordinary conv net: per layer a convolution with
the layer's templates (the matched filter), optional divisive normalisation, ReLU (the max over
the ON/OFF switch a: ``a = 1[pre-activation > 0]``) and a 2x2 max-pool (the max over the position
switch t: the argmax of each window), then a linear softmax layer ``gamma = softmax(W h + b) =
p(c | x)``. The switches are returned beside the logits.

Top-down (rendering) starts from a class's row of W, ``z = W^T one_hot(c)``, and per layer from
the top puts each value back at its window's argmax (unpool through t), multiplies by the ON
switches a and convolves with the same (tied) templates transposed: with the switches fixed, the
top-down pass is the adjoint of the bottom-up pass's linear part (biases and normalisation
left out; tests/test_drmm.py checks <A x, y> = <x, A^T y>). This is the reference code's
``ETopDown``, whose unpool repeats each value 2x2 and multiplies by the argmax mask: the same.

Pooling is written as a reshape and an argmax rather than ``max_pool2d(return_indices=True)`` so
that it runs under ``vmap`` (K batched models) and ``torch.compile``; its values equal
``max_pool2d``'s exactly and its gradient goes to the argmax, as max-pool's does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ...models.architecture import xavier_init_
from .params import spatial_sizes


@dataclass(frozen=True)
class DRMMConfig:
    in_channels: int = 1
    height: int = 28
    width: int = 28
    num_classes: int = 10
    # The label column classified and its index among the dataset's label columns.
    label: str = "digit"
    label_index: int = 0
    channels: tuple[int, ...] = (32, 64, 128)
    kernel_sizes: tuple[int, ...] = (5, 3, 3)
    bias: bool = True
    divisive_norm: bool = False
    ema_priors: bool = True
    init: str = "xavier"

    def __post_init__(self) -> None:
        # A config read back from a model file may carry lists.
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in self.kernel_sizes))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sizes(self) -> list[tuple[int, int]]:
        """The map size entering each layer, then after the last pool."""
        return spatial_sizes(self.height, self.width, len(self.channels))


class Switches(NamedTuple):
    """The latents one bottom-up pass infers in one layer."""

    a: torch.Tensor  # (N, C, H, W) float 0/1: ON switches (pre-activation > 0)
    t: torch.Tensor  # (N, C, H // 2, W // 2, 4) float one-hot: each window's argmax


def pool_2x2(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max over each 2x2 window (floor: a last odd row / column is dropped, as max_pool2d),
    one-hot of the window's first argmax (N, C, H2, W2, 4))."""
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    windows = (
        x[:, :, : 2 * h2, : 2 * w2]
        .reshape(n, c, h2, 2, w2, 2)
        .permute(0, 1, 2, 4, 3, 5)
        .reshape(n, c, h2, w2, 4)
    )
    index = windows.argmax(-1, keepdim=True)
    onehot = (torch.arange(4, device=x.device) == index).to(x.dtype)
    # x * 1 + others * 0 is the max exactly; the gradient reaches the argmax only.
    return (windows * onehot).sum(-1), onehot


def unpool_2x2(z: torch.Tensor, onehot: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The adjoint of :func:`pool_2x2` at fixed argmax: each value back at its window's argmax,
    zeros elsewhere (and in a dropped last row / column)."""
    n, c, h2, w2 = z.shape
    up = (
        (z[..., None] * onehot)
        .reshape(n, c, h2, w2, 2, 2)
        .permute(0, 1, 2, 4, 3, 5)
        .reshape(n, c, 2 * h2, 2 * w2)
    )
    if (2 * h2, 2 * w2) != (height, width):
        up = F.pad(up, (0, width - 2 * w2, 0, height - 2 * h2))
    return up


class DivisiveNorm(nn.Module):
    """The reference's divisive normalisation (``Layer.get_important_latents_BU``, ``is_dn``):
    the local mean over every channel and the kernel's window (zero padded, divided by the full
    count) is removed, and the result divided by sqrt((alpha + local variance / sigma^2) / 2);
    then a bias b. alpha, sigma, b: one learned number per layer (initial 1, 0.5, 0)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.alpha = nn.Parameter(torch.ones(1))
        self.sigma = nn.Parameter(torch.full((1,), 0.5))
        self.b = nn.Parameter(torch.zeros(1))

    def _local_mean(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return F.avg_pool2d(x.mean(1, keepdim=True), k, 1, k // 2, count_include_pad=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self._local_mean(x)
        variance = self._local_mean(centred.square())
        scale = (self.alpha + 1e-10 + variance / (self.sigma + 1e-5).square()) / 2.0
        return centred / torch.sqrt(scale) + self.b


class DRMMNetwork(nn.Module):
    def __init__(self, config: DRMMConfig):
        super().__init__()
        self.config = config
        sizes = config.sizes()
        if min(sizes[-1]) < 1:
            raise ValueError(
                f"{len(config.channels)} 2x2 pools do not fit {config.height}x{config.width} images"
            )
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        cin = config.in_channels
        for c, k in zip(config.channels, config.kernel_sizes, strict=True):
            self.convs.append(nn.Conv2d(cin, c, k, padding=k // 2, bias=config.bias))
            self.norms.append(DivisiveNorm(k) if config.divisive_norm else nn.Identity())
            cin = c
        h, w = sizes[-1]
        self.top_shape = (config.channels[-1], h, w)
        self.classifier = nn.Linear(config.channels[-1] * h * w, config.num_classes)
        if config.init == "xavier":
            xavier_init_(self)
        if config.ema_priors:
            # Trained by the "sgd" optimiser on 0.5 ||pi - batch mean||^2 at lr 1 - momentum,
            # which is the EMA update (methods/drmm/model.py).
            self.prior_a = nn.ParameterList(
                nn.Parameter(torch.full((c, hh, ww), 0.5))
                for c, (hh, ww) in zip(config.channels, sizes[:-1], strict=True)
            )
            self.prior_t = nn.ParameterList(
                nn.Parameter(torch.full((c, hh // 2, ww // 2, 4), 0.25))
                for c, (hh, ww) in zip(config.channels, sizes[:-1], strict=True)
            )

    @property
    def num_latent(self) -> int:
        return self.config.num_classes

    # -- bottom-up ------------------------------------------------------------------------------
    def bottom_up(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Switches]]:
        """(class logits (N, classes), the switches of every layer, bottom first)."""
        switches = []
        h = x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            latent = norm(conv(h))
            pooled, t = pool_2x2(latent)
            # relu(max) = max(relu): the ReLU after the pool keeps the pooled map small.
            h = torch.relu(pooled)
            switches.append(Switches((latent > 0).to(latent.dtype).detach(), t.detach()))
        return self.classifier(h.flatten(1)), switches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottom_up(x)[0]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits, zeros): the VAE's ``encode`` shape, for tools that read a code."""
        logits = self.forward(x)
        return logits, torch.zeros_like(logits)

    # -- top-down -------------------------------------------------------------------------------
    def top(self, classes: torch.Tensor) -> torch.Tensor:
        """z^(L) = W^T c: rows of the softmax weights for class weights ``classes`` (N, C)."""
        return (classes @ self.classifier.weight).view(-1, *self.top_shape)

    def top_down(
        self, z: torch.Tensor, switches: list[Switches]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the rendered image, the rendering entering each layer from the top): z is the top
        map (:meth:`top`); each layer unpools through t, masks by a and convolves with its
        templates transposed."""
        sizes = self.config.sizes()
        renderings = []
        for i in reversed(range(len(self.convs))):
            renderings.append(z)
            h, w = sizes[i]
            z = unpool_2x2(z, switches[i].t, h, w) * switches[i].a
            conv = self.convs[i]
            z = F.conv_transpose2d(z, conv.weight, padding=conv.padding)
        return z, renderings

    def prior_switches(self, n: int, generator: torch.Generator | None) -> list[Switches]:
        """Switches for rendering from a class alone: drawn from the EMA priors (a ~
        Bernoulli(pi_a), t ~ pi_t normalised over each window) with a generator, or their modes
        (pi_a > 1/2, the window's most frequent argmax) without."""
        if not self.config.ema_priors:
            raise ValueError("rendering from the priors needs drmm.ema_priors = true")
        out = []
        for pa, pt in zip(self.prior_a, self.prior_t, strict=True):
            pa = pa.detach().clamp(0.0, 1.0)
            pt = pt.detach().clamp(min=1e-6)
            if generator is None:
                a = (pa > 0.5).to(pa.dtype).expand(n, *pa.shape)
                index = pt.argmax(-1, keepdim=True).expand(n, *pt.shape[:-1], 1)
            else:
                u = torch.rand((n, *pa.shape), generator=generator).to(pa.device)
                a = (u < pa).to(pa.dtype)
                probs = (pt / pt.sum(-1, keepdim=True)).reshape(-1, 4)
                draws = torch.multinomial(probs.cpu(), n, replacement=True, generator=generator)
                index = draws.T.reshape(n, *pt.shape[:-1], 1).to(pt.device)
            t = (torch.arange(4, device=pt.device) == index).to(pt.dtype)
            out.append(Switches(a.contiguous(), t))
        return out
