"""The networks of their own that two members of the family train beside the VAE.

- :class:`Discriminator`: disentanglement_lib's ``fc_discriminator`` (FactorVAE): 6 x dense 1000
  with leaky ReLU (TF's slope 0.2, not PyTorch's 0.01), then 2 logits; probabilities clipped to
  [1e-6, 1 - 1e-6].
- :class:`MineEstimators`: one MINE statistics network T(x, y) per (factor l, latent r) pair
  (disentanglement_lib's ``mine``: dense 1 -> 20 on x and on y, summed, ELU, dense 20 -> 1), all
  pairs evaluated at once as batched matrix products.

Both are initialised like TF's dense layers (glorot-uniform kernels, zero biases) with
``init = "xavier"``.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn


class Discriminator(nn.Module):
    def __init__(self, num_latent: int, layers: int = 6, units: int = 1000, init: str = "xavier"):
        super().__init__()
        dims = [num_latent] + [units] * layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.out = nn.Linear(dims[-1], 2)
        if init == "xavier":
            for m in [*self.hidden, self.out]:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, 2), clipped probabilities (N, 2))."""
        h = z
        for layer in self.hidden:
            h = torch.nn.functional.leaky_relu(layer(h), 0.2)
        logits = self.out(h)
        return logits, torch.softmax(logits, dim=1).clamp(1e-6, 1.0 - 1e-6)


class MineEstimators(nn.Module):
    """P = F * L statistics networks; ``forward(x, y)`` with x (B, P) and y (B, P) -> (P, B)."""

    def __init__(self, pairs: int, units: int = 20, init: str = "xavier"):
        super().__init__()
        self.w_x = nn.Parameter(torch.empty(pairs, units))
        self.b_x = nn.Parameter(torch.zeros(pairs, units))
        self.w_y = nn.Parameter(torch.empty(pairs, units))
        self.b_y = nn.Parameter(torch.zeros(pairs, units))
        self.w_out = nn.Parameter(torch.empty(pairs, units))
        self.b_out = nn.Parameter(torch.zeros(pairs))
        # TF dense default: glorot uniform over (fan_in, fan_out) = (1, units) and (units, 1).
        limit = math.sqrt(6.0 / (1 + units)) if init == "xavier" else 1.0 / math.sqrt(units)
        for w in (self.w_x, self.w_y, self.w_out):
            nn.init.uniform_(w, -limit, limit)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = x.T[:, :, None] * self.w_x[:, None] + self.b_x[:, None]
        h = h + y.T[:, :, None] * self.w_y[:, None] + self.b_y[:, None]
        h = torch.nn.functional.elu(h)  # (P, B, units)
        return (h * self.w_out[:, None]).sum(-1) + self.b_out[:, None]
