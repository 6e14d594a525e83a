"""The semi-supervised VAE objective with label replacement (METHODS.md sections 3-5):
disentanglement_lib's ``BaseS2VAE`` with the project's labelled term.

One training step sees B unlabelled images x_u and B_l labelled images x_l with labels y and
observed mask o. With mu, v the encoder mean / log-variance, eps ~ N(0, I) and step s:

    loss = mean_n recon(x_u,n | z_u,n) + unsupervised_regularizer(KL, mu, v, z)   (section 3)
         + gamma_sup(s) * R_s(mu(x_l), y, o)                                    (section 4)
         + lambda * labelled_term(x_l, y, o; p, w_kl)                           (section 5)

The beta-VAE's regulariser is beta * mean_n sum_d KL(x_u,n)_d; the other members of the family
(:mod:`semidisent.methods.s2`) override :meth:`SemiSupervisedVAE.unsupervised_regularizer`
only, as disentanglement_lib's models do, and may add an auxiliary loss for a network of their
own (FactorVAE's discriminator), arranged so that one backward pass gives every parameter group
exactly its own loss's gradient. R_s is one of :mod:`semidisent.objectives.supervised`; the
labelled term (reconstruction of x_l with label replacement, weight lambda =
``labelled_weight``, KL weight w_kl = :meth:`labelled_kl_weight`) is in
:mod:`semidisent.objectives.replacement`: with ``labelled_recon = "replaced"`` it is exactly 0
when p = 0, with ``"all"`` it is the ELBO of x_l at p = 0.

Hyper-parameters that may differ between the K models of a batched run (beta, gamma_sup and its
schedule, the rate, the family's own) arrive as a dict of tensors and the step as a tensor, so
that one module definition serves a single model and K stacked models under vmap. Random numbers
(eps, the replacement draws, the family's extra uniforms) are inputs: the step is a pure function
of its inputs, which is what makes it replayable as a CUDA graph and batchable with vmap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from ..models.vae import VAE
from .elbo import bernoulli_reconstruction, gaussian_kl
from .replacement import (
    replace_latents,
    replacement_mask,
    replacement_term,
    replacement_values,
)
from .schedule import gamma_at
from .supervised import build_supervised
from .targets import TARGETS, resolve_target

STAT_NAMES = ("loss", "recon", "kl", "sup", "lab", "replaced")


class ModelBatch(NamedTuple):
    """One model's inputs for one step (the per-model slice of a ``training.sampler.Batch``)."""

    x_u: torch.Tensor  # (B, C, H, W) float in [0, 1]
    x_l: torch.Tensor  # (B_l, C, H, W)
    y_l: torch.Tensor  # (B_l, F) int64, -1 where unobserved
    obs_l: torch.Tensor  # (B_l, F) bool
    eps_u: torch.Tensor  # (B, L) standard normal
    eps_l: torch.Tensor  # (B_l, L)
    u_rep: torch.Tensor  # (B_l, F) uniform (0, 1): the replacement draws
    u_extra: torch.Tensor  # (n,) uniform (0, 1): the family's own draws (n may be 0)


@dataclass(frozen=True)
class ObjectiveConfig:
    """The structural choices of the objective (same for every model of a batched run)."""

    label_sizes: tuple[int, ...]
    supervised_loss: str = "xent"
    sup_reduction: str = "sum"
    replacement_unit: str = "example"
    replacement_target: str = "auto"
    embed_sigma: float = 1.0
    embed_learn_sigma: bool = False
    # Which labelled examples are decoded: "replaced" (those with a replaced entry) or "all".
    labelled_recon: str = "replaced"
    # Weight lambda of the labelled reconstruction term.
    labelled_weight: float = 1.0
    # Noise added to a replaced value: "none" or "posterior" (the encoder's own, detached).
    replacement_noise: str = "none"
    # False when the labelled term is exactly 0 for every model of the run (labelled_recon
    # "replaced" with p = 0 everywhere, or labelled_weight 0): skips the labelled decoder pass.
    decode_labelled: bool = True
    # bf16 autocast of the networks (losses stay float32); None = float32 throughout.
    amp_dtype: torch.dtype | None = None


class SemiSupervisedVAE(nn.Module):
    """The VAE plus the trainable parts of the objective (l2's b, embed's embeddings); the
    semi-supervised beta-VAE (disentanglement_lib's ``s2_vae``)."""

    # Statistics this model reports, in order (the family's own are appended).
    stat_names: ClassVar[tuple[str, ...]] = STAT_NAMES
    # The replacement target "auto" picks when the regulariser does not name one (None: R_s's).
    default_target: ClassVar[str | None] = None

    def __init__(self, vae: VAE, config: ObjectiveConfig):
        super().__init__()
        if len(config.label_sizes) > vae.num_latent:
            raise ValueError(
                f"{len(config.label_sizes)} label columns need at least as many latents, "
                f"the VAE has {vae.num_latent}"
            )
        self.vae = vae
        self.config = config
        self.supervised = build_supervised(
            config.supervised_loss,
            config.label_sizes,
            config.sup_reduction,
            embed_sigma=config.embed_sigma,
            embed_learn_sigma=config.embed_learn_sigma,
        )
        target = config.replacement_target
        if target == "auto" and self.default_target is not None:
            target = self.default_target
        self.target_name = resolve_target(target, config.supervised_loss)
        self._target = TARGETS[self.target_name]

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(
            x.device.type,
            dtype=self.config.amp_dtype or torch.bfloat16,
            enabled=self.config.amp_dtype is not None,
        ):
            mean, log_var = self.vae.encode(x)
        return mean.float(), log_var.float()

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            z.device.type,
            dtype=self.config.amp_dtype or torch.bfloat16,
            enabled=self.config.amp_dtype is not None,
        ):
            return self.vae.decode(z).float()

    # -- what the members of the family override ---------------------------------------------
    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """The code the decoder reconstructs from (``supervised`` stops its gradient)."""
        return z

    def unsupervised_regularizer(
        self,
        kl: torch.Tensor,
        mean: torch.Tensor,
        log_var: torch.Tensor,
        z: torch.Tensor,
        hyper: dict[str, torch.Tensor],
        step: torch.Tensor,
        u_extra: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...]]:
        """(regulariser added to the loss, auxiliary loss of the family's own network or None,
        extra statistics). beta-VAE: beta * KL."""
        return hyper["beta"] * kl, None, ()

    def supervised_term(
        self,
        mean_l: torch.Tensor,
        y_l: torch.Tensor,
        obs_l: torch.Tensor,
        u_extra: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...]]:
        """(R_s on the labelled encoder mean, auxiliary loss or None, extra statistics)."""
        return self.supervised(mean_l, y_l, obs_l), None, ()

    def labelled_kl_weight(self, hyper: dict[str, torch.Tensor]) -> torch.Tensor | float:
        """The KL weight of the labelled term (the family's ELBO weight: beta here)."""
        return hyper["beta"]

    # -- the step ------------------------------------------------------------------------------
    def forward(
        self, batch: ModelBatch, hyper: dict[str, torch.Tensor], step: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss (), stats (len(stat_names),)) for one model and one step; ``hyper`` holds
        beta, gamma_sup, gamma_code, gamma_threshold, rate and the family's own values."""
        gamma = gamma_at(step, hyper["gamma_sup"], hyper["gamma_code"], hyper["gamma_threshold"])
        return self.objective(*batch[:7], hyper, gamma, hyper["rate"], step, batch.u_extra)

    def objective(
        self,
        x_u: torch.Tensor,
        x_l: torch.Tensor,
        y_l: torch.Tensor,
        obs_l: torch.Tensor,
        eps_u: torch.Tensor,
        eps_l: torch.Tensor,
        u_rep: torch.Tensor,
        hyper: dict[str, torch.Tensor],
        gamma: torch.Tensor,
        rate: torch.Tensor,
        step: torch.Tensor | None = None,
        u_extra: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective with gamma_sup(s) already evaluated: (loss (), stats)."""
        if step is None:
            step = torch.zeros((), dtype=torch.int64, device=x_u.device)
        if u_extra is None:
            u_extra = x_u.new_zeros(0)
        # Unlabelled: the ELBO with the family's regulariser.
        mean_u, log_var_u = self._encode(x_u)
        z_u = VAE.reparameterise(mean_u, log_var_u, eps_u)
        recon_u = bernoulli_reconstruction(self._decode(self.decoder_input(z_u)), x_u).mean()
        kl_u = gaussian_kl(mean_u, log_var_u).sum(1).mean()
        reg, aux, extra = self.unsupervised_regularizer(
            kl_u, mean_u, log_var_u, z_u, hyper, step, u_extra
        )
        # Labelled: R_s on the encoder mean.
        mean_l, log_var_l = self._encode(x_l)
        sup, aux_sup, extra_sup = self.supervised_term(mean_l, y_l, obs_l, u_extra)
        loss = recon_u + reg + gamma * sup
        zero = loss.new_zeros(())
        lab, replaced = zero, zero
        if self.config.decode_labelled:
            cfg = self.config
            mask = replacement_mask(u_rep, obs_l, rate, cfg.replacement_unit)
            z_l = VAE.reparameterise(mean_l, log_var_l, eps_l)
            values = replacement_values(
                self._target(y_l, self.supervised), mean_l, z_l, cfg.replacement_noise
            )
            z_dec = self.decoder_input(replace_latents(z_l, values, mask))
            recon_l = bernoulli_reconstruction(self._decode(z_dec), x_l)
            kl_l = gaussian_kl(mean_l, log_var_l)
            lab = cfg.labelled_weight * replacement_term(
                recon_l, kl_l, mask, self.labelled_kl_weight(hyper), cfg.labelled_recon
            )
            loss = loss + lab
            replaced = mask.sum() / obs_l.sum().clamp(min=1)
        stats = [loss, recon_u, kl_u, sup, lab, replaced.to(loss.dtype), *extra, *extra_sup]
        # The auxiliary networks' losses (gradients separated by construction) are optimised
        # with the rest but reported on their own (the "loss" statistic is the model's).
        for a in (aux, aux_sup):
            if a is not None:
                loss = loss + a
        return loss, torch.stack(stats).detach()

    def objective_state(self) -> dict[str, list]:
        """The learned parameters of the objective as plain lists (for the model file's meta)."""
        return {k: v.detach().cpu().tolist() for k, v in self.supervised.named_parameters()}
