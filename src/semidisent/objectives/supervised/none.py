"""none: no supervised regulariser (R_s = 0); labels act only through label replacement."""

from __future__ import annotations

import torch

from .base import SupervisedLoss


class NoSupervision(SupervisedLoss):
    name = "none"
    consistent_target = "gaussian"

    def forward(
        self, mean: torch.Tensor, labels: torch.Tensor, observed: torch.Tensor
    ) -> torch.Tensor:
        # A zero that depends on mean keeps the autograd graph (and vmap outputs) uniform.
        return mean.sum() * 0.0
