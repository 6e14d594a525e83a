"""xent: sigmoid cross-entropy between the supervised latents and the normalised labels.

    R_s = sum_{b, j observed} [ max(mu_bj, 0) - mu_bj * y_bj / k_j + log(1 + exp(-|mu_bj|)) ]

over the first F latents (F = number of label columns), k_j = label_sizes[j]; a SUM over batch
and factors as dlib's ``supervised_regularizer_xent`` ("mean": divided by the batch size B).
Consistent replacement target: t(y) = logit(y / k), where the loss is minimised
(sigmoid(mu) = y / k); for y = 0 the minimiser is -inf and t(0) = logit(1 / (2k)) instead
(:mod:`semidisent.objectives.targets`).
"""

from __future__ import annotations

import torch
from torch.nn.functional import binary_cross_entropy_with_logits

from .base import SupervisedLoss


class XentLoss(SupervisedLoss):
    name = "xent"
    consistent_target = "logit"

    def forward(
        self, mean: torch.Tensor, labels: torch.Tensor, observed: torch.Tensor
    ) -> torch.Tensor:
        mu = mean[:, : self.num_factors].float()
        target = self.clean_labels(labels) / self.sizes
        ce = binary_cross_entropy_with_logits(mu, target, reduction="none")
        return self.reduce(torch.where(observed, ce, 0.0).sum(), mean.shape[0])
