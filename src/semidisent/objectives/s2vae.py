"""The semi-supervised VAE objective with label replacement (METHODS.md sections 3-5).

One training step sees B unlabelled images x_u and B_l labelled images x_l with labels y and
observed mask o. With mu, v the encoder mean / log-variance, eps ~ N(0, I) and step s:

    loss = mean_n recon(x_u,n | z_u,n) + beta * mean_n sum_d KL(x_u,n)_d        (section 3)
         + gamma_sup(s) * R_s(mu(x_l), y, o)                                    (section 4)
         + lambda * labelled_term(x_l, y, o; p, beta)                           (section 5)

R_s is one of :mod:`semidisent.objectives.supervised`; the labelled term (reconstruction of
x_l with label replacement, weight lambda = ``labelled_weight``) is in
:mod:`semidisent.objectives.replacement`: with ``labelled_recon = "replaced"`` it is exactly 0
when p = 0, with ``"all"`` it is the beta-ELBO of x_l at p = 0. beta, gamma and p are
tensors so that one module definition serves a single model and K stacked models under vmap.
Random numbers (eps, the replacement draws) are inputs: the step is a pure function of its
inputs, which is what makes it replayable as a CUDA graph and batchable with vmap.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from .supervised import build_supervised
from .targets import TARGETS, resolve_target

STAT_NAMES = ("loss", "recon", "kl", "sup", "lab", "replaced")


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
    """The VAE plus the trainable parts of the objective (l2's b, embed's embeddings)."""

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
        self.target_name = resolve_target(config.replacement_target, config.supervised_loss)
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

    def forward(
        self,
        x_u: torch.Tensor,
        x_l: torch.Tensor,
        y_l: torch.Tensor,
        obs_l: torch.Tensor,
        eps_u: torch.Tensor,
        eps_l: torch.Tensor,
        u_rep: torch.Tensor,
        beta: torch.Tensor,
        gamma: torch.Tensor,
        rate: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss (), stats (len(STAT_NAMES),)) for one model and one step."""
        # Unlabelled: the beta-VAE ELBO.
        mean_u, log_var_u = self._encode(x_u)
        z_u = VAE.reparameterise(mean_u, log_var_u, eps_u)
        recon_u = bernoulli_reconstruction(self._decode(z_u), x_u).mean()
        kl_u = gaussian_kl(mean_u, log_var_u).sum(1).mean()
        # Labelled: R_s on the encoder mean.
        mean_l, log_var_l = self._encode(x_l)
        sup = self.supervised(mean_l, y_l, obs_l)
        loss = recon_u + beta * kl_u + gamma * sup
        zero = loss.new_zeros(())
        lab, replaced = zero, zero
        if self.config.decode_labelled:
            cfg = self.config
            mask = replacement_mask(u_rep, obs_l, rate, cfg.replacement_unit)
            z_l = VAE.reparameterise(mean_l, log_var_l, eps_l)
            values = replacement_values(
                self._target(y_l, self.supervised), mean_l, z_l, cfg.replacement_noise
            )
            recon_l = bernoulli_reconstruction(
                self._decode(replace_latents(z_l, values, mask)), x_l
            )
            kl_l = gaussian_kl(mean_l, log_var_l)
            lab = cfg.labelled_weight * replacement_term(
                recon_l, kl_l, mask, beta, cfg.labelled_recon
            )
            loss = loss + lab
            replaced = mask.sum() / obs_l.sum().clamp(min=1)
        stats = torch.stack([loss, recon_u, kl_u, sup, lab, replaced.to(loss.dtype)]).detach()
        return loss, stats

    def objective_state(self) -> dict[str, list]:
        """The learned parameters of the objective as plain lists (for the model file's meta)."""
        return {k: v.detach().cpu().tolist() for k, v in self.supervised.named_parameters()}
