"""The DRMM's semi-supervised objective, as the authors' follow-up code builds it
(``Model.BuildCost``, seed_models.md section 4.2; gradient-based generalised EM):

    J = CE(gamma_l, y_l)                                     labelled rows whose label is observed
      + rc_weight * mean ||x - x_hat||^2                     reconstruction (mean over pixels)
      + kl_weight * mean_n [ -sum_c gamma_nc log(C gamma_nc + 1e-8) ]   = H(gamma) - log C
      + nn_weight * sum_l mean( ReLU(-z^(l))^2 )             non-negative renderings

with gamma = softmax of the bottom-up logits, x_hat the top-down rendering of one_hot(argmax
gamma) through the image's own switches (the reference renders the predicted class on both
batches), z^(l) the rendering entering layer l from the top (the reference's
``latents_unpooled_no_mask``). The last three terms are computed on the batch ``cost_on`` names
(``both``: half each). ``objective: cnn`` is J's first term alone, on the same network.

The EMA priors of the switches (pi_a = mean ON switch, pi_t = mean argmax one-hot of each unit,
momentum 0.99, from the unlabelled batch, or the labelled one when it is the only one seen, as
the reference) are parameters of their own group trained by plain gradient descent at lr
1 - momentum on 0.5 ||pi - batch mean||^2 (batch mean detached): that update is the EMA, and it
keeps the step a pure function of its inputs (vmap, compile, CUDA graphs, checkpoints).
"""

from __future__ import annotations

import contextlib
import math
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ...objectives.s2vae import ModelBatch
from .networks import DRMMNetwork, Switches

STAT_NAMES = ("loss", "xent", "recon", "entropy", "nonneg", "train_error")


def _full(x: torch.Tensor) -> torch.Tensor:
    """float32 for the losses of an autocast (half precision) pass; other dtypes as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def entropy_term(logits: torch.Tensor) -> torch.Tensor:
    """mean_n [-sum_c gamma_nc log(C gamma_nc + 1e-8)] (the reference's ``KLD_cost``)."""
    gamma = torch.softmax(logits, dim=-1)
    c = logits.shape[-1]
    return -(gamma * torch.log(c * gamma + 1e-8)).sum(-1).mean()


class DRMM(nn.Module):
    stat_names: ClassVar[tuple[str, ...]] = STAT_NAMES

    def __init__(
        self,
        network: DRMMNetwork,
        objective: str = "drmm",
        cost_on: str = "unlabelled",
        amp_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.network = network
        self.objective = objective
        self.cost_on = cost_on
        self.amp_dtype = amp_dtype

    def _amp(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=self.amp_dtype)

    def unsupervised_terms(
        self, x: torch.Tensor, logits: torch.Tensor, switches: list[Switches]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, entropy, non-negativity) of one batch."""
        net = self.network
        k = logits.shape[-1]
        predicted = logits.detach().argmax(-1, keepdim=True)
        onehot = (torch.arange(k, device=x.device) == predicted).to(net.classifier.weight.dtype)
        with self._amp(x):
            image, renderings = net.top_down(net.top(onehot), switches)
        recon = (x - _full(image)).square().mean()
        nonneg = sum(F.relu(-_full(z)).square().mean() for z in renderings)
        return recon, entropy_term(_full(logits)), nonneg  # type: ignore[return-value]

    def prior_loss(self, switches: list[Switches]) -> torch.Tensor:
        """0.5 sum ||pi - batch mean||^2 over the priors (its gradient step is the EMA)."""
        net = self.network
        total = torch.zeros((), dtype=net.prior_a[0].dtype, device=switches[0].a.device)
        for pa, pt, s in zip(net.prior_a, net.prior_t, switches, strict=True):
            total = total + 0.5 * (pa - s.a.to(pa.dtype).mean(0)).square().sum()
            total = total + 0.5 * (pt - s.t.to(pt.dtype).mean(0)).square().sum()
        return total

    def forward(
        self, batch: ModelBatch, hyper: dict[str, torch.Tensor], step: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.network
        col = net.config.label_index
        y, seen = batch.y_l[:, col], batch.obs_l[:, col]
        with self._amp(batch.x_l):
            logits_l, switches_l = net.bottom_up(batch.x_l)
        logits_l = _full(logits_l)
        weight = seen.float()
        count = weight.sum().clamp(min=1.0)
        xent = (F.cross_entropy(logits_l, y.clamp(min=0), reduction="none") * weight).sum() / count
        train_error = ((logits_l.argmax(-1) != y).float() * weight).sum() / count
        zero = torch.zeros_like(xent)
        recon, entropy, nonneg = zero, zero, zero
        prior_switches = switches_l
        if self.objective == "drmm":
            parts = []
            if self.cost_on != "labelled":
                with self._amp(batch.x_u):
                    logits_u, switches_u = net.bottom_up(batch.x_u)
                parts.append(self.unsupervised_terms(batch.x_u, _full(logits_u), switches_u))
                prior_switches = switches_u
            if self.cost_on != "unlabelled":
                parts.append(self.unsupervised_terms(batch.x_l, logits_l, switches_l))
            share = 1.0 / len(parts)
            recon = share * sum(p[0] for p in parts)  # type: ignore[assignment]
            entropy = share * sum(p[1] for p in parts)  # type: ignore[assignment]
            nonneg = share * sum(p[2] for p in parts)  # type: ignore[assignment]
        loss = (
            xent
            + hyper["rc_weight"] * recon
            + hyper["kl_weight"] * entropy
            + hyper["nn_weight"] * nonneg
        )
        total = loss + self.prior_loss(prior_switches) if net.config.ema_priors else loss
        # The entropy term is H(gamma) - log C: reported as H(gamma) / log C in [0, 1].
        k = net.config.num_classes
        entropy_share = (entropy + math.log(k)) / math.log(k) if self.objective == "drmm" else zero
        stats = torch.stack([loss, xent, recon, entropy_share, nonneg, train_error])
        return total, stats.detach()
