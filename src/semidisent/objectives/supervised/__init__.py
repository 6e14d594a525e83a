"""Supervised regularisers R_s, one per file, keyed by ``train.supervised_loss``."""

from __future__ import annotations

from collections.abc import Sequence

from .base import SupervisedLoss
from .cov import CovLoss
from .embed import EmbedLoss
from .l2 import L2Loss
from .none import NoSupervision
from .xent import XentLoss

SUPERVISED_LOSSES: dict[str, type[SupervisedLoss]] = {
    cls.name: cls for cls in (XentLoss, L2Loss, CovLoss, EmbedLoss, NoSupervision)
}


def build_supervised(
    name: str,
    label_sizes: Sequence[int],
    reduction: str = "sum",
    embed_sigma: float = 1.0,
    embed_learn_sigma: bool = False,
) -> SupervisedLoss:
    if name not in SUPERVISED_LOSSES:
        raise ValueError(f"unknown supervised loss {name!r}; one of {', '.join(SUPERVISED_LOSSES)}")
    if name == "embed":
        return EmbedLoss(label_sizes, reduction, sigma=embed_sigma, learn_sigma=embed_learn_sigma)
    return SUPERVISED_LOSSES[name](label_sizes, reduction)


__all__ = [
    "SUPERVISED_LOSSES",
    "CovLoss",
    "EmbedLoss",
    "L2Loss",
    "NoSupervision",
    "SupervisedLoss",
    "XentLoss",
    "build_supervised",
]
