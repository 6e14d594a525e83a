"""Replacement targets t(y): the value a supervised latent takes when its label replaces it
(METHODS.md section 5), keyed by ``train.replacement_target``.

A replaced code must sit where the regulariser R_s puts the encoder mean for that label: else
the decoder learns one map for inferred codes and another for replaced ones (e.g. a replaced
middle shape on the boundary between the encoder's clusters). So each consistent target is the
minimiser over mu of R_s's per-entry loss, where that minimiser is finite. With y the integer
label of factor j and k_j its number of values (``label_sizes``):

    logit:     t(y) = logit(y / k)            y >= 1: xent's minimiser (dlib normalises y / k)
               t(0) = logit(1 / (2k))         xent's minimiser for y = 0 is -inf; the value
                                              used is half a label step below label 1 in
                                              sigmoid space (finite, below every other
                                              label's target; the project's choice)
    gaussian:  t(y) = Phi^-1((y + 0.5) / k)   matches the N(0, 1) prior; used with cov and
                                              none, which fix no per-label location (cov only
                                              penalises cross-covariances), so any increasing
                                              map is consistent with them
    scaled:    t(y) = y / b   (b: l2's learned scale)      l2's minimiser
    embedding: t(y) = argmin_mu embed's per-entry loss     computed by bisection; where the
                                                           minimiser is infinite (the label's
                                                           embedding is the smallest or largest
                                                           of its factor), e_{j, y} itself
                                                           (:meth:`EmbedLoss.minimisers`)

"auto" picks the target named by the regulariser (``SupervisedLoss.consistent_target``).
Every target is computed without gradient: replaced values are data, not predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .supervised import SUPERVISED_LOSSES, SupervisedLoss
from .supervised.embed import EmbedLoss
from .supervised.l2 import L2Loss

TargetFn = Callable[[torch.Tensor, SupervisedLoss], torch.Tensor]
# |b| below this is treated as this (sign kept) so that y / b stays finite.
MIN_SCALE = 1e-3


def _quantile(labels: torch.Tensor, sup: SupervisedLoss) -> torch.Tensor:
    return (labels.clamp(min=0).to(torch.float32) + 0.5) / sup.sizes


def logit_target(labels: torch.Tensor, sup: SupervisedLoss) -> torch.Tensor:
    y = labels.clamp(min=0).to(torch.float32)
    return torch.logit(torch.where(y > 0, y, 0.5) / sup.sizes)


def gaussian_target(labels: torch.Tensor, sup: SupervisedLoss) -> torch.Tensor:
    return math.sqrt(2.0) * torch.erfinv(2.0 * _quantile(labels, sup) - 1.0)


def scaled_target(labels: torch.Tensor, sup: SupervisedLoss) -> torch.Tensor:
    if not isinstance(sup, L2Loss):
        raise ValueError("the scaled replacement target needs the l2 supervised loss")
    b = sup.scale.detach()
    b = torch.where(b.abs() < MIN_SCALE, torch.where(b < 0, -MIN_SCALE, MIN_SCALE), b)
    return labels.clamp(min=0).to(torch.float32) / b


def embedding_target(labels: torch.Tensor, sup: SupervisedLoss) -> torch.Tensor:
    if not isinstance(sup, EmbedLoss):
        raise ValueError("the embedding replacement target needs the embed supervised loss")
    return sup.target_of(labels)


TARGETS: dict[str, TargetFn] = {
    "logit": logit_target,
    "gaussian": gaussian_target,
    "scaled": scaled_target,
    "embedding": embedding_target,
}


def resolve_target(name: str, supervised_loss: str) -> str:
    """The concrete target for ``train.replacement_target`` (resolving "auto")."""
    if name == "auto":
        return SUPERVISED_LOSSES[supervised_loss].consistent_target
    if name not in TARGETS:
        raise ValueError(f"unknown replacement target {name!r}; one of auto, {', '.join(TARGETS)}")
    return name
