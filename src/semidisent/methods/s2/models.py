"""disentanglement_lib's semi-supervised family (``methods/semi_supervised/semi_supervised_vae.py``)
beyond the beta-VAE: each member overrides only its unsupervised regulariser (or, for MINE, the
supervised term; for ``supervised``, the decoder's input), as the reference does. With KL the
batch-mean KL of the unlabelled batch, z its sample, mu / v its encoder outputs:

    s2_beta_tc_vae:  KL + (beta - 1) * TC(z, mu, v)                       (minibatch-weighted)
    s2_dip_vae:      KL + dip(C), C = cov(mu) (i) or cov(mu) + E[diag e^v] (ii),
                     lambda_d = lambda_d_factor * lambda_od
    s2_annealed_vae: gamma * |KL - C(step)|                                (capacity schedule)
    s2_factor_vae:   KL + gamma * mean(logit_0(z) - logit_1(z)); the discriminator maximises
                     0.5 mean log p_0(z) + 0.5 mean log p_1(shuffle(z)) with its own Adam
    s2_mine_vae:     beta * KL; the supervised term is sum_{l != r} MI(mu_r, y_l)^2, each MI a
                     MINE estimate (Donsker-Varadhan) whose network trains with its own Adam
    supervised:      the decoder reconstructs from stop_gradient(z) and no regulariser: the
                     encoder learns from R_s alone (disentanglement_lib's ``supervised``)

Networks of their own (discriminator, estimators) are trained in the same step from the same
backward pass: their loss sees the codes detached, and the model's loss sees their parameters
detached, so each parameter group receives exactly its own loss's gradient, as
disentanglement_lib's two ``minimize`` calls with separate variable lists do.

The labelled term of label replacement uses the member's ELBO weight of KL (beta for s2vae and
s2_mine_vae, 1 for the others, 0 for ``supervised``, whose decoder also sees the replaced codes
through a stop-gradient): the project's choice (the batch-level regularisers, TC, DIP and the
capacity, are defined on the unlabelled batch only).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.func import functional_call

from ...models.vae import VAE
from ...objectives.s2vae import STAT_NAMES, ObjectiveConfig, SemiSupervisedVAE
from .networks import Discriminator, MineEstimators
from .regularisers import (
    capacity,
    covariance_of_mean,
    dip_regulariser,
    permutations,
    shuffle_codes,
    total_correlation,
)

Hyper = dict[str, torch.Tensor]


def _detached(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's current parameters, detached (inside functional_call / vmap: the
    substituted ones)."""
    return {k: v.detach() for k, v in module.named_parameters()}


class BetaTCVAE(SemiSupervisedVAE):
    stat_names: ClassVar[tuple[str, ...]] = (*STAT_NAMES, "tc")

    def unsupervised_regularizer(self, kl, mean, log_var, z, hyper, step, u_extra):
        tc = total_correlation(z, mean, log_var)
        return kl + (hyper["beta"] - 1.0) * tc, None, (tc.detach(),)

    def labelled_kl_weight(self, hyper: Hyper) -> float:
        return 1.0


class DIPVAE(SemiSupervisedVAE):
    stat_names: ClassVar[tuple[str, ...]] = (*STAT_NAMES, "dip")

    def __init__(self, vae: VAE, config: ObjectiveConfig, dip_type: str = "i"):
        super().__init__(vae, config)
        if dip_type not in ("i", "ii"):
            raise ValueError(f"dip_type must be i or ii, got {dip_type!r}")
        self.dip_type = dip_type

    def unsupervised_regularizer(self, kl, mean, log_var, z, hyper, step, u_extra):
        cov = covariance_of_mean(mean)
        if self.dip_type == "ii":
            cov = cov + torch.diag_embed(log_var.exp().mean(0))
        lambda_od = hyper["lambda_od"]
        dip = dip_regulariser(cov, lambda_od, hyper["lambda_d_factor"] * lambda_od)
        return kl + dip, None, (dip.detach(),)

    def labelled_kl_weight(self, hyper: Hyper) -> float:
        return 1.0


class AnnealedVAE(SemiSupervisedVAE):
    stat_names: ClassVar[tuple[str, ...]] = (*STAT_NAMES, "capacity")

    def unsupervised_regularizer(self, kl, mean, log_var, z, hyper, step, u_extra):
        c = capacity(hyper["c_max"], step, hyper["iteration_threshold"])
        return hyper["annealed_gamma"] * (kl - c).abs(), None, (c.detach(),)

    def labelled_kl_weight(self, hyper: Hyper) -> float:
        return 1.0


class FactorVAE(SemiSupervisedVAE):
    stat_names: ClassVar[tuple[str, ...]] = (*STAT_NAMES, "tc", "disc")

    def __init__(self, vae: VAE, config: ObjectiveConfig, layers: int, units: int, init: str):
        super().__init__(vae, config)
        self.discriminator = Discriminator(vae.num_latent, layers, units, init)

    def unsupervised_regularizer(self, kl, mean, log_var, z, hyper, step, u_extra):
        # The model's TC term: gradient into the encoder through the discriminator's current
        # weights, none into the discriminator.
        logits, _ = functional_call(self.discriminator, _detached(self.discriminator), (z,))
        tc = (logits[:, 0] - logits[:, 1]).mean()
        # The discriminator's loss: gradient into its weights only.
        zd = z.detach()
        _, probs = self.discriminator(zd)
        _, probs_shuffled = self.discriminator(shuffle_codes(zd, u_extra))
        disc = -(0.5 * probs[:, 0].log().mean() + 0.5 * probs_shuffled[:, 1].log().mean())
        return kl + hyper["gamma"] * tc, disc, (tc.detach(), disc.detach())

    def labelled_kl_weight(self, hyper: Hyper) -> float:
        return 1.0


class MineVAE(SemiSupervisedVAE):
    """R_s is replaced by the MINE penalty; labels must be fully observed (checked on load)."""

    # mi: the estimators' total Donsker-Varadhan estimate over every (factor, latent) pair.
    stat_names: ClassVar[tuple[str, ...]] = (*STAT_NAMES, "mi")
    default_target = "gaussian"  # the MINE penalty fixes no per-label location

    def __init__(self, vae: VAE, config: ObjectiveConfig, units: int, init: str):
        super().__init__(vae, config)
        self.num_factors = len(config.label_sizes)
        self.estimators = MineEstimators(self.num_factors * vae.num_latent, units, init)
        f, lat = self.num_factors, vae.num_latent
        pairs = torch.cartesian_prod(torch.arange(f), torch.arange(lat))  # (P, 2): (l, r)
        self.register_buffer("pair_factor", pairs[:, 0].clone(), persistent=False)
        self.register_buffer("pair_latent", pairs[:, 1].clone(), persistent=False)
        self.register_buffer("off_diagonal", pairs[:, 0] != pairs[:, 1], persistent=False)

    def supervised_term(self, mean_l, y_l, obs_l, u_extra):
        b = mean_l.shape[0]
        x = mean_l[:, self.pair_latent]  # (B, P): the representation, one column per pair
        y = y_l.clamp(min=0).to(mean_l.dtype)[:, self.pair_factor]  # raw labels, as dlib
        perm = permutations(u_extra, b)  # (P, B): each pair shuffles its labels on its own
        y_shuffled = torch.gather(y.T, 1, perm).T
        log_b = torch.log(torch.tensor(float(b), device=mean_l.device))

        def mutual_information(params, xs):
            joint = functional_call(self.estimators, params, (xs, y))  # (P, B)
            marginal = functional_call(self.estimators, params, (xs, y_shuffled))
            return joint.mean(1) + log_b - torch.logsumexp(marginal, dim=1)  # (P,)

        own = dict(self.estimators.named_parameters())
        mi_model = mutual_information(_detached(self.estimators), x)  # into the encoder only
        mi_estimators = mutual_information(own, x.detach())  # into the estimators only
        penalty = torch.where(self.off_diagonal, mi_model.square(), 0.0).sum()
        total = mi_estimators.sum()
        return penalty, -total, (total.detach(),)

    def labelled_kl_weight(self, hyper: Hyper) -> torch.Tensor:
        return hyper["beta"]


class SupervisedVAE(SemiSupervisedVAE):
    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        return z.detach()

    def unsupervised_regularizer(self, kl, mean, log_var, z, hyper, step, u_extra):
        return kl * 0.0, None, ()  # no regulariser; a zero keeps the graph uniform

    def labelled_kl_weight(self, hyper: Hyper) -> float:
        return 0.0
