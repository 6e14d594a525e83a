"""The objectives of the partially-specified VAE: Siddharth et al.'s importance-sampled one and
Kingma et al.'s M2 with y enumerated, on the same networks (METHODS.md section 7).

One step sees B unlabelled images and B_l labelled ones (the supervision mask's fixed pool,
cycled in order by the sampler: never re-drawn, unlike the reference notebooks, probtorch issue
54). Both batches go through one pass (unlabelled rows have nothing observed). With v the declared
variables, O the observed ones of an example (supervised variables whose label entry is
observed), s = 1..S samples drawn in q's order (observed variables clamped, the others relaxed /
reparameterised from the batch's uniforms):

    siddharth:  log w_s = sum_{v in O} log q(v_obs | x, parents_s)           importance weights
                w_s     = softmax_s(log w_s)
                L(x)    = sum_s w_s [log p(x | v_s) + sum_v log p(v_s) - sum_{v not in O}
                          log q(v_s | x, parents_s)] + alpha * mean_s log w_s
    unlabelled: O is empty, the weights are uniform and L is the ELBO over every variable.
    (probtorch's ``objectives.montecarlo.elbo`` with beta = 1: its ``ml`` term is the mean of
    log w, a Jensen lower bound of log q(y | x); categorical masses as its Concrete's log_pmf.)

With q = q(y | x) q(z | x, y) and y observed, log w_s = log q(y | x) for every s: the weights are
uniform and L = M2's labelled bound (Monte Carlo) + alpha log q(y | x) (tests/test_psvae.py).

    m2:  one categorical y at the root of q, enumerated; the gaussians z reparameterised (one
         draw per class), their KL analytic (conditional on sampled parents):
         L(x, y) = log p(x | y, z) + log p(y) - KL(q(z | x, y) || p(z))     (observed gaussians:
                   + log p(z_obs) instead of their KL)
         U(x)    = sum_y pi(y) L(x, y) + H(pi),  pi = q(y | x), or one_hot(y_obs) when observed
         loss   += m2_alpha * N / n_l * mean_l [-log q(y_obs | x) - log q(z_obs | x, y)]
         (Kingma et al.'s alpha = 0.1 N for a summed objective; per-example means here).

loss = -mean_u L(x_u) - labelled_weight * mean_l L(x_l) [+ M2's classification term].
"""

from __future__ import annotations

import contextlib
import math
from typing import ClassVar

import torch
from torch import nn
from torch.nn.functional import log_softmax

from ...objectives.relaxed import (
    categorical_log_mass,
    categorical_log_mass_of,
    concrete_sample,
    gaussian_kl_general,
    gaussian_log_density,
    normal,
    one_hot,
    standardised_label,
)
from ...objectives.s2vae import ModelBatch
from .networks import PSNetwork
from .spec import Specification, Variable

STAT_NAMES = ("loss", "recon", "kl", "elbo_u", "elbo_l", "log_q_label", "train_error")


class Observed:
    """The observed values of a batch (N rows): per supervised variable, which rows observe it
    and the value they clamp it to."""

    def __init__(
        self,
        spec: Specification,
        label_sizes: tuple[int, ...],
        labels: torch.Tensor,
        observed: torch.Tensor,
    ):
        self.mask: dict[str, torch.Tensor] = {}  # (N,) bool
        self.index: dict[str, torch.Tensor] = {}  # (N,) int64 label (-1 / anything if not)
        self.value: dict[str, torch.Tensor] = {}  # (N, size)
        for v in spec.variables:
            if not v.supervised:
                continue
            col = spec.label_index(v)
            y = labels[:, col]
            self.mask[v.name] = observed[:, col]
            self.index[v.name] = y
            if v.categorical:
                self.value[v.name] = one_hot(y.clamp(min=0), v.size)
            else:
                self.value[v.name] = standardised_label(y, label_sizes[col])[:, None]

    def where(self, v: Variable, sampled: torch.Tensor) -> torch.Tensor:
        """The value used: the clamped one where observed, the sample elsewhere."""
        if v.name not in self.mask:
            return sampled
        return torch.where(self.mask[v.name][:, None], self.value[v.name], sampled)

    def of(self, v: Variable, like: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the rows observing ``v`` (all False for an unsupervised variable)."""
        if v.name in self.mask:
            return self.mask[v.name]
        return torch.zeros(like.shape[-1], dtype=torch.bool, device=like.device)


def log_likelihood(
    net: PSNetwork, x: torch.Tensor, code: torch.Tensor, amp: torch.dtype | None
) -> torch.Tensor:
    """log p(x | values) for values (S, N, code) and images (N, C, H, W): (S, N)."""
    with _autocast(x, amp):
        return net.log_likelihood(x, code).float()


def _autocast(x: torch.Tensor, amp: torch.dtype | None) -> contextlib.AbstractContextManager:
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=amp)


def _features(net: PSNetwork, x: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    with _autocast(x, amp):
        return net.features(x).float()


def siddharth_terms(
    net: PSNetwork,
    x: torch.Tensor,
    obs: Observed,
    u: torch.Tensor,
    temperature: torch.Tensor | float,
    alpha: torch.Tensor | float,
    amp: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Per-example terms (N,) of Siddharth et al.'s objective from uniforms u (S, N, U):
    ``bound`` (L above), ``recon`` (-sum_s w_s log p(x | v_s)), ``kl`` (the rest of -L's
    ELBO part), ``ml`` (mean_s log w_s), ``weights`` (S, N) and the first categorical's
    ``logits`` (S, N, k) when there is one; ``log_ratio`` (S, N) and the ``values``."""
    spec = net.spec
    h = _features(net, x, amp)
    hs = h.expand(u.shape[0], *h.shape)
    values: dict[str, torch.Tensor] = {}
    log_w = hs.new_zeros(hs.shape[:2])
    log_q_sampled = hs.new_zeros(hs.shape[:2])
    offset = 0
    out: dict[str, torch.Tensor] = {}
    for v in spec.variables:
        uv = u[..., offset : offset + v.size]
        offset += v.size
        a, b = net.head(v, hs, values)
        if v.categorical:
            value = obs.where(v, concrete_sample(a, uv, temperature))
            log_q = categorical_log_mass(a, value)
            out.setdefault("logits", a)
        else:
            assert b is not None
            value = obs.where(v, a + torch.exp(b) * normal(uv))
            log_q = gaussian_log_density(value, a, b)
        values[v.name] = value
        seen = obs.of(v, h[:, 0])
        log_w = log_w + torch.where(seen, log_q, 0.0)
        log_q_sampled = log_q_sampled + torch.where(seen, 0.0, log_q)
    log_p = hs.new_zeros(hs.shape[:2])
    for v in spec.generation_order:
        if v.categorical:
            log_p = log_p - math.log(v.size)  # the uniform prior's mass
        else:
            mean, log_std = net.prior(v, values, values[v.name])
            log_p = log_p + gaussian_log_density(values[v.name], mean, log_std)
    log_px = log_likelihood(net, x, net.code(values), amp)
    weights = torch.softmax(log_w, dim=0)
    ml = log_w.mean(0)
    recon = -(weights * log_px).sum(0)
    kl = (weights * (log_q_sampled - log_p)).sum(0)
    out.update(bound=-recon - kl + alpha * ml, recon=recon, kl=kl, ml=ml, weights=weights)
    # Per sample: log p(x, v_s) - log q(v_s | x) of the sampled variables (test-time inference).
    out["log_ratio"] = log_px + log_p - log_q_sampled
    out["values"] = values  # type: ignore[assignment]
    return out


def m2_terms(
    net: PSNetwork,
    x: torch.Tensor,
    obs: Observed,
    u: torch.Tensor,
    amp: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Per-example terms (N,) of M2 from normals' uniforms u (k, N, G) (one draw of every
    gaussian per enumerated class): ``bound`` (U(x), or L(x, y_obs) where y is observed),
    ``recon``, ``kl``, ``ml`` (log q of the observed values, M2's classification term) and the
    categorical's ``logits`` (N, k)."""
    spec = net.spec
    y = spec.categoricals[0]
    k = y.size
    h = _features(net, x, amp)
    n = h.shape[0]
    logits, _ = net.head(y, h, {})
    hs = h.expand(k, *h.shape)
    classes = one_hot(torch.arange(k, device=h.device), k)[:, None, :].expand(k, n, k)
    values: dict[str, torch.Tensor] = {y.name: classes}
    params: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    offset = 0
    for v in spec.variables:
        if v is y:
            continue
        uv = u[..., offset : offset + v.size]
        offset += v.size
        mean, log_std = net.head(v, hs, values)
        assert log_std is not None
        values[v.name] = obs.where(v, mean + torch.exp(log_std) * normal(uv))
        params[v.name] = (mean, log_std)
    terms = hs.new_zeros(k, n) - math.log(k)  # log p(y) of the uniform prior
    class_terms = hs.new_zeros(k, n)
    for v in spec.generation_order:
        if v is y:
            continue
        mean, log_std = params[v.name]
        p_mean, p_log_std = net.prior(v, values, mean)
        seen = obs.of(v, h[:, 0])
        kl = gaussian_kl_general(mean, log_std, p_mean, p_log_std)
        log_p = gaussian_log_density(values[v.name], p_mean, p_log_std)
        terms = terms + torch.where(seen, log_p, -kl)
        class_terms = class_terms + torch.where(
            seen, gaussian_log_density(values[v.name], mean, log_std), 0.0
        )
    log_px = log_likelihood(net, x, net.code(values), amp)
    y_seen = obs.of(y, h[:, 0])
    q_y = torch.softmax(logits, -1)
    pi = obs.where(y, q_y) if y.supervised else q_y  # (N, k)
    log_q_y = log_softmax(logits, -1)
    entropy = torch.where(y_seen, 0.0, -(q_y * log_q_y).sum(-1))
    bound = (pi.T * (log_px + terms)).sum(0) + entropy
    recon = -(pi.T * log_px).sum(0)
    ml = (pi.T * class_terms).sum(0)
    if y.supervised:
        ml = ml + torch.where(y_seen, categorical_log_mass_of(logits, obs.index[y.name]), 0.0)
    return {"bound": bound, "recon": recon, "kl": -bound - recon, "ml": ml, "logits": logits}


class PartiallySpecifiedVAE(nn.Module):
    """The network and the objective of one model: ``forward(batch, hyper, step)``; ``hyper``
    holds alpha, m2_alpha and temperature (per model: they may differ in a batched run)."""

    stat_names: ClassVar[tuple[str, ...]] = STAT_NAMES

    def __init__(
        self,
        network: PSNetwork,
        objective: str,
        samples: int,
        label_sizes: tuple[int, ...],
        m2_scale: float = 1.0,
        labelled_weight: float = 1.0,
        amp_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if objective not in ("siddharth", "m2"):
            raise ValueError(f"objective must be siddharth or m2, got {objective!r}")
        self.network = network
        self.spec = network.spec
        self.objective = objective
        self.samples = samples
        self.label_sizes = tuple(int(k) for k in label_sizes)
        self.m2_scale = float(m2_scale)
        self.labelled_weight = float(labelled_weight)
        self.amp_dtype = amp_dtype
        # The first supervised categorical: the training error statistic reads it.
        self.watched = next(
            (v for v in self.spec.variables if v.categorical and v.supervised), None
        )

    # -- random numbers -------------------------------------------------------------------------
    def draws_per_example(self) -> tuple[int, int]:
        """(samples, uniforms per sample) of one example: S x every variable's draws
        (siddharth), or k classes x the gaussians' normals (m2)."""
        if self.objective == "m2":
            gaussians = sum(v.size for v in self.spec.variables if not v.categorical)
            return self.spec.categoricals[0].size, gaussians
        return self.samples, self.spec.uniforms_per_sample

    def uniforms(self, u_extra: torch.Tensor, n: int) -> torch.Tensor:
        """The step's uniforms as (samples, N, per sample): row-major per example."""
        s, per = self.draws_per_example()
        return u_extra[: n * s * per].view(n, s, per).transpose(0, 1)

    # -- the step -------------------------------------------------------------------------------
    def forward(
        self, batch: ModelBatch, hyper: dict[str, torch.Tensor], step: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, bl = batch.x_u.shape[0], batch.x_l.shape[0]
        x = torch.cat([batch.x_u, batch.x_l])
        f = batch.y_l.shape[1]
        labels = torch.cat([batch.y_l.new_full((b, f), -1), batch.y_l])
        observed = torch.cat([batch.obs_l.new_zeros((b, f)), batch.obs_l])
        obs = Observed(self.spec, self.label_sizes, labels, observed)
        u = self.uniforms(batch.u_extra, b + bl)
        if self.objective == "m2":
            t = m2_terms(self.network, x, obs, u, self.amp_dtype)
            logits = t["logits"]
        else:
            t = siddharth_terms(
                self.network, x, obs, u, hyper["temperature"], hyper["alpha"], self.amp_dtype
            )
            logits = t["logits"][0] if "logits" in t else None
        bound_u, bound_l = t["bound"][:b], t["bound"][b:]
        loss = -bound_u.mean() - self.labelled_weight * bound_l.mean()
        ml_l = t["ml"][b:].mean()
        if self.objective == "m2":
            loss = loss - self.m2_scale * hyper["m2_alpha"] * ml_l
        stats = [
            loss,
            t["recon"][:b].mean(),
            t["kl"][:b].mean(),
            bound_u.mean(),
            bound_l.mean(),
            ml_l,
            self._train_error(logits, obs, b, loss),
        ]
        return loss, torch.stack(stats).detach()

    def _train_error(
        self, logits: torch.Tensor | None, obs: Observed, b: int, like: torch.Tensor
    ) -> torch.Tensor:
        """The encoder's error on the labelled batch's observed entries of the first supervised
        categorical (0 when there is none)."""
        if logits is None or self.watched is None:
            return like.new_zeros(())
        name = self.watched.name
        seen = obs.mask[name][b:]
        wrong = (logits[b:].argmax(-1) != obs.index[name][b:]) & seen
        return wrong.sum().to(like.dtype) / seen.sum().clamp(min=1).to(like.dtype)
