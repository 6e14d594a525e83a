"""l2: squared error between the scaled supervised latents and the RAW integer labels.

    R_s = sum_{b, j observed} (b * mu_bj - y_bj)^2

with one learned scalar b initialised to 1 (dlib's ``supervised_regularizer_l2`` with
``learn_scale=True``, its default); a SUM over batch and factors ("mean": divided by B).
Consistent replacement target: t(y) = y / b (the minimiser), with b detached.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import SupervisedLoss


class L2Loss(SupervisedLoss):
    name = "l2"
    consistent_target = "scaled"

    def __init__(self, label_sizes: Sequence[int], reduction: str = "sum"):
        super().__init__(label_sizes, reduction)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(
        self, mean: torch.Tensor, labels: torch.Tensor, observed: torch.Tensor
    ) -> torch.Tensor:
        mu = mean[:, : self.num_factors].float()
        err = (self.scale * mu - self.clean_labels(labels)).square()
        return self.reduce(torch.where(observed, err, 0.0).sum(), mean.shape[0])
