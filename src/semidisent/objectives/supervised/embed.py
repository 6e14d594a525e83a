"""embed: each factor's values get learned 1-d embeddings; a softmax over them classifies mu_j.

For factor j with k_j values and embeddings e_{j,1..k_j}:

    logits_bji = -((mu_bj - e_{j,i}) * sigma)^2
    R_s = sum_j mean_{b: y_bj observed} [ -log softmax_i(logits_bj)[y_bj] ]

softmax cross-entropy MEAN over the batch (TF's ``tf.losses.softmax_cross_entropy``, whose
default reduction averages over the examples with non-zero weight, i.e. the observed ones),
SUMMED over factors (dlib's ``supervised_regularizer_embed``); ``sup_reduction`` does not change
it. Embeddings are initialised as TF's glorot-uniform for shape [k]: U(-sqrt(3/k), sqrt(3/k)).
sigma is fixed (``train.embed_sigma``) or learned from that value (``train.embed_learn_sigma``);
dlib's ``use_order`` variant is not implemented.

Consistent replacement target: t(y_j) = e_{j, y_j} (the value mu_j must take to predict y_j
best), detached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import SupervisedLoss


class EmbedLoss(SupervisedLoss):
    name = "embed"
    consistent_target = "embedding"

    def __init__(
        self,
        label_sizes: Sequence[int],
        reduction: str = "sum",
        sigma: float = 1.0,
        learn_sigma: bool = False,
    ):
        super().__init__(label_sizes, reduction)
        kmax = max(self.label_sizes)
        # One padded (F, kmax) table so that the loss is a few batched ops (and stacks for vmap);
        # padding columns get -inf logits.
        table = torch.zeros(self.num_factors, kmax)
        valid = torch.zeros(self.num_factors, kmax, dtype=torch.bool)
        for j, k in enumerate(self.label_sizes):
            limit = math.sqrt(3.0 / k)
            table[j, :k] = torch.empty(k).uniform_(-limit, limit)
            valid[j, :k] = True
        self.embeddings = nn.Parameter(table)
        self.register_buffer("valid", valid, persistent=False)
        if learn_sigma:
            self.sigma = nn.Parameter(torch.tensor(float(sigma)))
        else:
            self.register_buffer("sigma", torch.tensor(float(sigma)), persistent=False)

    def forward(
        self, mean: torch.Tensor, labels: torch.Tensor, observed: torch.Tensor
    ) -> torch.Tensor:
        mu = mean[:, : self.num_factors].float()  # (B, F)
        logits = -((mu[:, :, None] - self.embeddings[None]) * self.sigma).square()  # (B, F, K)
        logits = logits.masked_fill(~self.valid[None], float("-inf"))
        log_p = torch.log_softmax(logits, dim=-1)
        y = labels.clamp(min=0)
        nll = -log_p.gather(-1, y[:, :, None])[:, :, 0]  # (B, F)
        obs = observed.to(nll.dtype)
        per_factor = torch.where(observed, nll, 0.0).sum(0) / obs.sum(0).clamp(min=1.0)
        return per_factor.sum()

    def embedding_of(self, labels: torch.Tensor) -> torch.Tensor:
        """e_{j, y_bj} for labels (B, F) -> (B, F)."""
        y = labels.clamp(min=0)
        table = self.embeddings[None].expand(y.shape[0], -1, -1)
        return table.gather(-1, y[:, :, None])[:, :, 0]
