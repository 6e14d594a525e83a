"""Label replacement (Nie, Wang, Patel, Baraniuk 2020; METHODS.md section 5, the project's reading)
and the labelled reconstruction term it lives in.

For a labelled batch x_l (B examples, F label columns, L >= F latents), with u ~ U(0, 1) drawn per
example and factor, rate p, and observed mask o:

    unit "example":  r_bj = [u_b1 < p] * o_bj       (replace every observed entry of example b)
    unit "entry":    r_bj = [u_bj < p] * o_bj       (replace each observed entry on its own)

    z_b   = mu_b + exp(v_b / 2) * eps_b,   z_bj <- t(y_bj) (+ n_bj) where r_bj (j <= F), detached
    term  = lambda * (1 / B) sum_b w_b * ( recon(x_b | z_b) + beta * sum_{d: not r_bd} KL_bd )

with lambda = ``train.labelled_weight`` and the examples that are decoded, w_b, chosen by
``train.labelled_recon``:

    replaced:  w_b = [any_j r_bj]   only examples with a replacement are reconstructed; with
                                    p = 0 the term is exactly 0 and the objective is exactly
                                    Locatello et al.'s (section 4). The rate then changes two
                                    things at once: replacement, and how much x_l is
                                    reconstructed at all (about p * B examples per step).
    all:       w_b = 1              every labelled example is decoded every step, from the
                                    replaced code with probability p and from its own sampled
                                    code otherwise, so p changes replacement only: (all, p = 0)
                                    vs (all, p > 0) isolates it. At p = 0 the term is the plain
                                    beta-ELBO of x_l.

``train.replacement_noise``: n_bj = 0 ("none"), or the encoder's own posterior noise
exp(v_bj / 2) * eps_bj, detached ("posterior"), so that replaced and inferred codes reach the
decoder with the same spread.

``torch.where`` puts the detached value in place of z, so no gradient reaches the encoder through
a replaced entry (in every mode), and the KL of replaced dims is dropped (they are not inferred).
"""

from __future__ import annotations

import torch

LABELLED_RECON = ("replaced", "all")
REPLACEMENT_NOISE = ("none", "posterior")


def replacement_mask(
    u: torch.Tensor, observed: torch.Tensor, rate: torch.Tensor | float, unit: str
) -> torch.Tensor:
    """Which label entries replace their latent this step: bool (B, F)."""
    if unit == "example":
        return (u[:, :1] < rate) & observed
    if unit == "entry":
        return (u < rate) & observed
    raise ValueError(f"replacement unit must be example or entry, got {unit!r}")


def replacement_values(
    targets: torch.Tensor, mean: torch.Tensor, z: torch.Tensor, noise: str
) -> torch.Tensor:
    """The values (B, F) written into replaced entries: the targets, plus (``posterior``) the
    sampled code's own deviation from its mean, z - mu = exp(v / 2) * eps. Detached."""
    if noise == "none":
        return targets.detach()
    if noise == "posterior":
        f = targets.shape[1]
        return (targets + (z[:, :f] - mean[:, :f])).detach()
    raise ValueError(
        f"replacement noise must be one of {', '.join(REPLACEMENT_NOISE)}, got {noise!r}"
    )


def replace_latents(z: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """z (B, L) with z[:, :F] set to the (detached) values (B, F) where mask (B, F)."""
    f = values.shape[1]
    head = torch.where(mask, values.detach().to(z.dtype), z[:, :f])
    return torch.cat([head, z[:, f:]], dim=1)


def replacement_term(
    recon: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    beta: torch.Tensor | float,
    labelled_recon: str = "replaced",
) -> torch.Tensor:
    """(1/B) sum_b w_b (recon_b + beta sum_{d not replaced} kl_bd); recon (B,), kl (B, L).

    w_b = [example b has a replaced entry] ("replaced") or 1 ("all"); the caller applies
    ``labelled_weight``."""
    b, f = mask.shape
    kept = torch.cat([~mask, mask.new_ones(b, kl.shape[1] - f)], dim=1)
    per_example = recon + beta * torch.where(kept, kl, 0.0).sum(1)
    if labelled_recon == "all":
        return per_example.sum() / b
    if labelled_recon == "replaced":
        return torch.where(mask.any(1), per_example, 0.0).sum() / b
    raise ValueError(
        f"labelled_recon must be one of {', '.join(LABELLED_RECON)}, got {labelled_recon!r}"
    )
