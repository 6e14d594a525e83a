"""Objectives, one concept per module: the ELBO, the supervised regularisers, label
replacement and its targets, the gamma_sup schedules, and their combination (``s2vae``).

Registries are keyed by the names used in params.yaml: ``SUPERVISED_LOSSES``
(train.supervised_loss), ``TARGETS`` (train.replacement_target), ``SCHEDULES``
(train.gamma_schedule).
"""

from .elbo import bernoulli_reconstruction, beta_vae_loss, gaussian_kl
from .replacement import replace_latents, replacement_mask, replacement_term, replacement_values
from .s2vae import STAT_NAMES, ObjectiveConfig, SemiSupervisedVAE
from .schedule import SCHEDULES, gamma_at
from .supervised import SUPERVISED_LOSSES, build_supervised
from .targets import TARGETS, resolve_target

__all__ = [
    "SCHEDULES",
    "STAT_NAMES",
    "SUPERVISED_LOSSES",
    "TARGETS",
    "ObjectiveConfig",
    "SemiSupervisedVAE",
    "bernoulli_reconstruction",
    "beta_vae_loss",
    "build_supervised",
    "gamma_at",
    "gaussian_kl",
    "replace_latents",
    "replacement_mask",
    "replacement_term",
    "replacement_values",
    "resolve_target",
]
