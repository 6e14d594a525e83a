"""Label replacement (Nie, Wang, Patel, Baraniuk 2020; METHODS.md section 5, the project's reading).

For a labelled batch x_l (B examples, F label columns, L >= F latents), with u ~ U(0, 1) drawn per
example and factor, rate p, and observed mask o:

    unit "example":  r_bj = [u_b1 < p] * o_bj       (replace every observed entry of example b)
    unit "entry":    r_bj = [u_bj < p] * o_bj       (replace each observed entry on its own)

    z_b   = mu_b + exp(v_b / 2) * eps_b,   z_bj <- t(y_bj) where r_bj (j <= F), t detached
    w_b   = [any_j r_bj]                  (examples with at least one replaced entry)
    term  = (1 / B) sum_b w_b * ( recon(x_b | z_b) + beta * sum_{d: not r_bd} KL_bd )

``torch.where`` puts the detached target in place of z, so no gradient reaches the encoder
through a replaced value, and the KL of replaced dims is dropped (they are not inferred).
Only examples with a replacement are reconstructed (w_b): with p = 0 the term is exactly 0 and
the objective is exactly the plain semi-supervised one (section 4). The sum is divided by the
whole labelled batch B, so the term's weight grows with p (about p * B reconstructed examples).
"""

from __future__ import annotations

import torch


def replacement_mask(
    u: torch.Tensor, observed: torch.Tensor, rate: torch.Tensor | float, unit: str
) -> torch.Tensor:
    """Which label entries replace their latent this step: bool (B, F)."""
    if unit == "example":
        return (u[:, :1] < rate) & observed
    if unit == "entry":
        return (u < rate) & observed
    raise ValueError(f"replacement unit must be example or entry, got {unit!r}")


def replace_latents(z: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """z (B, L) with z[:, :F] set to the (detached) targets (B, F) where mask (B, F)."""
    f = targets.shape[1]
    head = torch.where(mask, targets.detach().to(z.dtype), z[:, :f])
    return torch.cat([head, z[:, f:]], dim=1)


def replacement_term(
    recon: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: torch.Tensor | float
) -> torch.Tensor:
    """(1/B) sum_b w_b (recon_b + beta sum_{d not replaced} kl_bd); recon (B,), kl (B, L)."""
    b, f = mask.shape
    kept = torch.cat([~mask, mask.new_ones(b, kl.shape[1] - f)], dim=1)
    per_example = recon + beta * torch.where(kept, kl, 0.0).sum(1)
    weight = mask.any(1)
    return torch.where(weight, per_example, 0.0).sum() / b
