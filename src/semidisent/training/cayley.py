"""Cayley ADAM (Li, Fuxin & Todorovic, ICLR 2020, "Efficient Riemannian optimization on the
Stiefel manifold via the Cayley transform"), as St-RKM uses it (``AdamG`` of the authors'
``stiefel_optimizer.py``; ../shared/reference/seed_models.md section 3.4).

A Stiefel parameter X (p x n, p <= n) has orthonormal rows (X X^T = I_p; St-RKM stores U^T).
One update with G = dloss/dX, momentum M (n x p) and a *scalar* second moment v:

    X <- X with unit rows;  every RETRACT_EVERY-th step X <- QR retraction of X
    M <- b1 M + (1 - b1) G^T;        v <- b2 v + (1 - b2) ||G||_F^2
    M^ = M / (1 - b1^t);             v^ = v / (1 - b2^t)
    W^ = M^ X - 1/2 X^T (X M^ X)                     (n x n)
    W  = (W^ - W^^T) / sqrt(v^ + eps)                 (skew-symmetric)
    a  = min(lr, 1 / (||W||_1 + eps))                 (||.||_1: largest column sum of |W|)
    Y  = X^T - a M;  5 times: Y = X^T - a W (X^T + Y) / 2      (fixed point of the Cayley map)
    X  <- Y^T;       M <- W X_old^T sqrt(v^ + eps) (1 - b1^t)

Y converges to (I + a/2 W)^-1 (I - a/2 W) X^T, an orthogonal map of X^T (W is skew), so X
stays on the manifold up to the iteration's residual (a ||W||_1 <= 1 contracts it by 1/2 per
iteration) and rounding, which the row normalisation and the periodic QR retraction remove.

Differences from the reference, each for a reason:

- the QR retraction runs every RETRACT_EVERY (101) steps instead of with probability 1/101
  (``random.randint(1, 101) == 1``): the same rate, but deterministic given the step count, and
  graph-safe (both branches computed, one selected);
- the update is computed in float64 and rounded once into the parameter's dtype: orthonormality
  then holds to ~1e-7 in float32 over any number of steps (tests/test_cayley.py: 10,000 steps);
- weight decay is not applied (the reference passes 5e-4 and ignores it on the Stiefel branch).

:func:`cayley_adam_step` has :func:`semidisent.training.optim.adam_step`'s signature: one model or
K stacked models (leading K dimension), per-model step counts, learning rates and active
switches, all state tensors updated in place (the trainer's compiled / captured step uses it for
parameter groups whose ``OptimizerSpec.kind`` is ``"cayley_adam"``). :class:`CayleyAdam` wraps
it as a ``torch.optim.Optimizer`` for any other use (state dict, resume).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

BETAS = (0.9, 0.99)
EPS = 1e-8
# Cayley fixed-point iterations (the reference's Cayley_loop) and QR retraction period.
ITERATIONS = 5
RETRACT_EVERY = 101


def second_moment_shape(p: torch.Tensor, batched: bool) -> tuple[int, ...]:
    """The scalar second moment per model, shaped to broadcast against ``p``."""
    return (p.shape[0], 1, 1) if batched else (1, 1)


def qr_retraction(x: torch.Tensor) -> torch.Tensor:
    """The nearest-in-QR point with orthonormal rows: Q^T of X^T = QR, signs fixed so that R's
    diagonal is positive (a continuous choice: X already orthonormal maps to itself)."""
    q, r = torch.linalg.qr(x.transpose(-1, -2))
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (q * sign.unsqueeze(-2)).transpose(-1, -2)


def orthonormality_error(x: torch.Tensor) -> torch.Tensor:
    """max |X X^T - I| (per model for stacked X)."""
    eye = torch.eye(x.shape[-2], dtype=x.dtype, device=x.device)
    return (x @ x.transpose(-1, -2) - eye).abs().amax(dim=(-2, -1))


def _per_model(x: torch.Tensor, batched: bool) -> torch.Tensor:
    return x.view(-1, 1, 1) if batched else x.reshape(())


def cayley_adam_step(
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
    """One Cayley ADAM update in place. Each param (p, n) or (K, p, n) with p <= n; exp_avg the
    momentum stored transposed (M^T, the param's shape); exp_avg_sq the scalar second moment
    (:func:`second_moment_shape`); count, lr (K,) float32; active (K,) bool."""
    b1, b2 = betas
    with torch.no_grad():
        count.add_(active.to(count.dtype))
        t = _per_model(count.clamp(min=1.0), batched).double()
        on = _per_model(active, batched)
        bias1 = 1.0 - b1**t
        bias2 = 1.0 - b2**t
        retract = _per_model(torch.remainder(count, RETRACT_EVERY) == 1, batched) & on
        rate = _per_model(lr, batched).double()
        for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq, strict=True):
            if p.shape[-2] > p.shape[-1]:
                raise ValueError(f"a Stiefel parameter needs rows <= columns, got {tuple(p.shape)}")
            x = p.double()
            x = x / x.norm(dim=-1, keepdim=True)
            x = torch.where(retract, qr_retraction(x), x)
            g64 = torch.zeros_like(x) if g is None else g.double()
            mt = b1 * m.double().transpose(-1, -2) + (1.0 - b1) * g64.transpose(-1, -2)
            v_new = b2 * v.double() + (1.0 - b2) * g64.square().sum(dim=(-2, -1), keepdim=True)
            m_hat = mt / bias1
            scale = torch.sqrt(v_new / bias2 + eps)
            xt = x.transpose(-1, -2)
            w_hat = m_hat @ x - 0.5 * xt @ (x @ m_hat @ x)
            w = (w_hat - w_hat.transpose(-1, -2)) / scale
            norm_one = w.abs().sum(dim=-2).amax(dim=-1, keepdim=True).unsqueeze(-1)
            alpha = torch.minimum(rate, 1.0 / (norm_one + eps))
            y = xt - alpha * mt
            for _ in range(ITERATIONS):
                y = xt - alpha * (w @ (0.5 * (xt + y)))
            m_next = (w @ xt) * scale * bias1
            p.copy_(torch.where(on, y.transpose(-1, -2), p.double()).to(p.dtype))
            m.copy_(torch.where(on, m_next.transpose(-1, -2), m.double()).to(m.dtype))
            v.copy_(torch.where(on, v_new, v.double()).to(v.dtype))


class CayleyAdam(torch.optim.Optimizer):
    """Cayley ADAM as a ``torch.optim.Optimizer`` for Stiefel parameters (rows <= columns,
    orthonormal rows; a parameter with more dimensions is treated as (first, rest)).

    State per parameter: ``exp_avg`` (the momentum, transposed), ``exp_avg_sq`` (scalar) and
    ``step``: ``state_dict()`` / ``load_state_dict()`` resume exactly.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-4,
        betas: tuple[float, float] = BETAS,
        eps: float = EPS,
    ):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                flat = p.view(p.shape[0], -1)
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(1, dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(flat)
                    state["exp_avg_sq"] = torch.zeros((1, 1), dtype=p.dtype, device=p.device)
                cayley_adam_step(
                    [flat],
                    [p.grad.view(p.shape[0], -1)],
                    [state["exp_avg"]],
                    [state["exp_avg_sq"]],
                    state["step"],
                    torch.tensor([group["lr"]], dtype=torch.float32, device=p.device),
                    torch.ones(1, dtype=torch.bool, device=p.device),
                    batched=False,
                    betas=group["betas"],
                    eps=group["eps"],
                )
        return loss
