"""Random variables of the partially-specified VAE (METHODS.md section 7) as tensor functions of
uniform draws: the Concrete / Gumbel-Softmax relaxation of a categorical variable, the
reparameterised Gaussian, and the log densities the objective weighs.

Every sample is a deterministic function of U(0, 1) values handed in by the caller (the training
step takes them from the batch: ``Method.extra_uniforms``), so the step stays a pure function of
its inputs (compiled, CUDA-graph replayed and vmapped over K models; docs/architecture.md).

Concrete (Maddison et al.; Jang et al.) with logits a, temperature tau and u ~ U(0, 1)^k:

    g = -log(-log u)                  Gumbel(0, 1)
    y = softmax((a + g) / tau)        a point of the simplex; argmax y = argmax (a + g) is an
                                      exact sample of Categorical(softmax a) for every tau, and
                                      y -> one_hot(argmax (a + g)) as tau -> 0

Densities of a relaxed value are those of the reference library (probtorch's ``Concrete`` with
its default ``log_pdf=False``): the log probability mass of the argmax, log softmax(a)[argmax y].
The relaxation carries the pathwise gradient into the decoder; the mass term is what the ELBO's
log q - log p sees (for the uniform prior, log p = -log k).
"""

from __future__ import annotations

import math

import torch
from torch.nn.functional import log_softmax, softmax

LOG_2PI = math.log(2.0 * math.pi)


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) from U(0, 1) (the counter RNG's uniforms are never 0 or 1)."""
    return -torch.log(-torch.log(u))


def normal(u: torch.Tensor) -> torch.Tensor:
    """N(0, 1) from U(0, 1) by the inverse CDF (the same map as ``training.rng.to_normal``)."""
    return math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)


def concrete_sample(
    logits: torch.Tensor, u: torch.Tensor, temperature: torch.Tensor | float
) -> torch.Tensor:
    """A relaxed one-hot sample (..., k) of Concrete(logits, temperature) from uniforms (..., k)."""
    return softmax((logits + gumbel(u)) / temperature, dim=-1)


def one_hot(index: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot rows (..., k) of integer indices; a comparison, so that vmap needs no special
    rule (``torch.nn.functional.one_hot`` reads the maximum index)."""
    return (index[..., None] == torch.arange(k, device=index.device)).to(dtype)


def categorical_log_mass(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[argmax value]: the mass of a (relaxed or exact) one-hot value (...,)."""
    index = value.argmax(-1, keepdim=True)
    return torch.gather(log_softmax(logits, dim=-1), -1, index).squeeze(-1)


def categorical_log_mass_of(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[index] for integer indices (...,) (negative indices read 0)."""
    idx = index.clamp(min=0)[..., None]
    return torch.gather(log_softmax(logits, dim=-1), -1, idx).squeeze(-1)


def gaussian_log_density(
    value: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """log N(value; mean, exp(log_std)^2) summed over the last dimension: (..., d) -> (...,)."""
    z = (value - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - 0.5 * LOG_2PI).sum(-1)


def gaussian_kl_general(
    mean_q: torch.Tensor, log_std_q: torch.Tensor, mean_p: torch.Tensor, log_std_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_q, s_q^2) || N(mean_p, s_p^2)) summed over the last dimension."""
    var_ratio = torch.exp(2.0 * (log_std_q - log_std_p))
    t = (mean_q - mean_p) * torch.exp(-log_std_p)
    return 0.5 * (var_ratio + t.square() - 1.0 - 2.0 * (log_std_q - log_std_p)).sum(-1)


def standardised_label(index: torch.Tensor, size: torch.Tensor | int) -> torch.Tensor:
    """The value a supervised Gaussian variable takes for label ``index`` of a factor with
    ``size`` values: Phi^-1((index + 0.5) / size), the quantiles of the N(0, 1) prior (the
    project's "gaussian" replacement target, objectives/targets.py), so observed values sit
    where the prior puts its mass."""
    q = (index.clamp(min=0).to(torch.float32) + 0.5) / size
    return math.sqrt(2.0) * torch.erfinv(2.0 * q - 1.0)
