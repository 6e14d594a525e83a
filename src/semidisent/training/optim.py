"""Adam for one model or K stacked models, with a per-model learning rate and active mask.

The update is PyTorch's Adam (eps added to sqrt(v_hat), as ``torch.optim.Adam``; TF1's Adam,
used by disentanglement_lib, adds eps to sqrt(v) instead, which differs only early on):

    t += 1;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

It is written out (not ``torch.optim.Adam``) because in a batched run each of the K models has
its own step count, learning rate and on/off switch: a stopped model (pruned, diverged) keeps
its parameters and moments exactly, while the stacked tensors keep their shapes, so the captured
CUDA graph stays valid. All state is tensors updated in place (graph- and compile-friendly).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

BETAS = (0.9, 0.999)
EPS = 1e-8


def _per_model(x: torch.Tensor, p: torch.Tensor, batched: bool) -> torch.Tensor:
    """A (K,) tensor shaped to broadcast against parameter p ((K, ...) batched, else unbatched)."""
    return x.view(x.shape[0], *([1] * (p.ndim - 1))) if batched else x.reshape(())


def adam_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor | None],
    exp_avg: Sequence[torch.Tensor],
    exp_avg_sq: Sequence[torch.Tensor],
    count: torch.Tensor,
    lr: torch.Tensor,
    active: torch.Tensor,
    batched: bool,
    betas: tuple[float, float] = BETAS,
    eps: float = EPS,
) -> None:
    """One update in place. count, lr (K,) float32; active (K,) bool; grads None = zero."""
    b1, b2 = betas
    with torch.no_grad():
        count.add_(active.to(count.dtype))
        t = count.clamp(min=1.0)
        bias1 = 1.0 - b1**t
        bias2_sqrt = torch.sqrt(1.0 - b2**t)
        step_size = torch.where(active, lr / bias1, 0.0)
        w1 = torch.where(active, 1.0 - b1, 0.0)
        decay2 = torch.where(active, b2, 1.0)
        for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq, strict=True):
            if g is None:
                g = torch.zeros_like(p)
            a = _per_model(active, p, batched)
            g = torch.where(a, g, 0.0)
            m.lerp_(g, _per_model(w1, p, batched))
            v.mul_(_per_model(decay2, p, batched)).addcmul_(g, g, value=1.0 - b2)
            denom = (v.sqrt() / _per_model(bias2_sqrt, p, batched)).add_(eps)
            p.sub_(_per_model(step_size, p, batched) * m / denom)


def sgd_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor | None],
    exp_avg: Sequence[torch.Tensor],
    exp_avg_sq: Sequence[torch.Tensor],
    count: torch.Tensor,
    lr: torch.Tensor,
    active: torch.Tensor,
    batched: bool,
    betas: tuple[float, float] = BETAS,
    eps: float = EPS,
) -> None:
    """Plain gradient descent, p -= lr g, with Adam's signature (moments unused). On the loss
    0.5 ||p - target||^2 with target detached, lr = 1 - momentum makes it the exponential moving
    average p = momentum p + (1 - momentum) target (the DRMM's priors)."""
    with torch.no_grad():
        count.add_(active.to(count.dtype))
        step_size = torch.where(active, lr, 0.0)
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p.sub_(_per_model(step_size, p, batched) * g)
