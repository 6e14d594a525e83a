"""The interface of a supervised regulariser R_s(mu, y) (METHODS.md section 4).

R_s sees the encoder MEAN of the labelled batch, mu (B, L), the integer labels y (B, F) (-1 where
unobserved) and the observed mask (B, F); only observed entries contribute. Each regulariser
also names the replacement target t(y) that is consistent with it (what ``auto`` picks, see
:mod:`semidisent.objectives.targets`). Regularisers with learned parameters (l2's scale b,
embed's embeddings) are modules, trained with the VAE and stacked with it in batched training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn


class SupervisedLoss(nn.Module):
    name: ClassVar[str]
    # The replacement target (a key of objectives.targets.TARGETS) consistent with this loss.
    consistent_target: ClassVar[str]

    def __init__(self, label_sizes: Sequence[int], reduction: str = "sum"):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be sum or mean, got {reduction!r}")
        self.num_factors = len(label_sizes)
        self.label_sizes = tuple(int(k) for k in label_sizes)
        self.reduction = reduction
        # A buffer, not a Python list: it must already live on the device when the step is
        # captured as a CUDA graph (no host-to-device copy may happen inside a capture).
        self.register_buffer(
            "sizes", torch.tensor(self.label_sizes, dtype=torch.float32), persistent=False
        )

    def forward(
        self, mean: torch.Tensor, labels: torch.Tensor, observed: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def reduce(self, total: torch.Tensor, batch: int) -> torch.Tensor:
        """dlib's reduction is a sum over the batch; "mean" divides by the batch size."""
        return total if self.reduction == "sum" else total / batch

    @staticmethod
    def clean_labels(labels: torch.Tensor) -> torch.Tensor:
        """Labels as float with unobserved (-1) entries set to 0 (they are masked anyway)."""
        return labels.clamp(min=0).to(torch.float32)
