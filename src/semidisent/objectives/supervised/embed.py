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

Consistent replacement target: the minimiser over mu of the per-entry loss
L_y(mu) = -log softmax_i(logits(mu))[y], detached (:meth:`EmbedLoss.minimisers`). The logit
differences are affine in mu (the -sigma^2 mu^2 term is common to every class), so with the
natural parameter t = 2 sigma^2 mu the class probabilities are an exponential family,
p_i(t) ~ exp(t e_i - sigma^2 e_i^2), L_y is convex, and dL_y/dmu = 2 sigma^2 (E_p[e] - e_y):
the minimiser solves E_p[e] = e_y, found by bisection (E_p[e] increases with t). It is finite
exactly when e_y lies strictly between the smallest and largest embeddings of its factor; for
those two extremes L_y decreases forever and the target is e_y itself (the project's choice).
It is not e_y in general: the loss also pushes mu away from the neighbouring embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import SupervisedLoss

# Bisection for the minimiser: mu in [-BRACKET, BRACKET], halved ITERATIONS times (a width of
# 2e4 / 2^48, far below float32 resolution), in float64 so that E_p[e] - e_y keeps its sign.
BRACKET = 1e4
ITERATIONS = 48


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

    def minimisers(self) -> torch.Tensor:
        """(F, kmax) float32, detached: argmin_mu L_y(mu) for every factor j and value y (the
        embedding itself where that minimiser is infinite; padding columns are 0)."""
        e = self.embeddings.detach().double()
        valid = self.valid
        s2 = self.sigma.detach().double().square().clamp(min=1e-12)
        lowest = e.masked_fill(~valid, float("inf")).amin(1, keepdim=True)
        highest = e.masked_fill(~valid, float("-inf")).amax(1, keepdim=True)
        interior = valid & (e > lowest) & (e < highest)
        e_c = e.masked_fill(~valid, 0.0)[:, None, :]  # (F, 1, K): the classes c
        base = (-s2 * e_c.square()).masked_fill(~valid[:, None, :], float("-inf"))
        lo = torch.full_like(e, -BRACKET)  # (F, K): one bracket per (factor, value y)
        hi = torch.full_like(e, BRACKET)
        for _ in range(ITERATIONS):
            mid = 0.5 * (lo + hi)
            p = torch.softmax(2.0 * s2 * mid[..., None] * e_c + base, dim=-1)
            below = (p * e_c).sum(-1) < e  # E_p[e] < e_y: the minimiser is above mid
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return torch.where(interior, 0.5 * (lo + hi), e.masked_fill(~valid, 0.0)).float()

    def target_of(self, labels: torch.Tensor) -> torch.Tensor:
        """The consistent replacement target of labels (B, F): (B, F), detached."""
        table = self.minimisers()[None].expand(labels.shape[0], -1, -1)
        return table.gather(-1, labels.clamp(min=0)[:, :, None])[:, :, 0]
