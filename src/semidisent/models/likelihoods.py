"""Pixel likelihoods of 8-bit images (the local-decoder VAE's, docs/localvae.md): Bernoulli and the
discretised logistic mixture of PixelCNN++ (Salimans et al. 2017), channel-independent ("ci") or
channel-autoregressive ("ca"), and bits per dimension.

Images arrive as float in [0, 1] (stored uint8 k times float32(1/255)); the mixture works on the
256 bins of k, centred at x = 2k/255 - 1 in [-1, 1] with half-width 1/255. With M components and
C channels, per pixel:

    ci:  log p(x) = logsumexp_m [log pi_m + sum_c log P(x_c | mu_mc, s_mc)]       M + 2MC params
    ca:  the same with mu_mc + sum_{j<c} tanh(a_mcj) x_j (PixelCNN++'s colour
         dependence; C(C-1)/2 coefficients per component)                      M + 2MC + M C(C-1)/2
    P(k | mu, s) = sigma((x + 1/255 - mu)/s) - sigma((x - 1/255 - mu)/s), with the first bin
         extended to -inf and the last to +inf

(the reference's ``mix_logistic_ci``: 30 channels for MNIST, 70 for colour; ``mix_logistic_ca``:
100). log(sigma(a) - sigma(b)) is computed exactly as a + log(-expm1(b - a)) - softplus(a)
- softplus(b), never PixelCNN++'s mid-point approximation, so tiny bins stay exact. With C = 1
"ci" and "ca" are the same model. Bernoulli: log p = -BCE(logits, x) with x in [0, 1] (the
project's reconstruction term; on grey-level data not a normalised density of 8-bit pixels, so
its bits/dim is not comparable with the mixture's).
"""

from __future__ import annotations

import math

import torch
from torch.nn.functional import binary_cross_entropy_with_logits, log_softmax, softplus

LOG_SCALE_MIN = -7.0
HALF_BIN = 1.0 / 255.0
LIKELIHOODS = ("bernoulli", "logistic_mixture")


def bits_per_dim(log_prob: torch.Tensor, dims: int) -> torch.Tensor:
    """-log p (nats, per example) as bits per dimension: -log p / (dims ln 2)."""
    return -log_prob / (dims * math.log(2.0))


def to_bins(x: torch.Tensor) -> torch.Tensor:
    """x in [0, 1] (k / 255) -> the bin centre 2k/255 - 1 in [-1, 1]."""
    return torch.round(x * 255.0) * (2.0 / 255.0) - 1.0


def log_bin_mass(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(bin of x | logistic(mean, exp(log_scale))) elementwise, x a bin centre in [-1, 1]."""
    inv = torch.exp(-log_scale)
    a = (x - mean + HALF_BIN) * inv
    b = (x - mean - HALF_BIN) * inv
    interior = a + torch.log(-torch.expm1(b - a)) - softplus(a) - softplus(b)
    lowest = -softplus(-a)  # log sigma(a): the first bin runs from -inf
    highest = -softplus(b)  # log (1 - sigma(b)): the last bin runs to +inf
    return torch.where(x < -0.999, lowest, torch.where(x > 0.999, highest, interior))


class PixelLikelihood:
    """One of :data:`LIKELIHOODS` for C-channel images: the parameter channels a network must
    output (:attr:`channels`), log p(x) per image, a draw of one pixel, and a picture (the mean)."""

    def __init__(self, kind: str, in_channels: int, mixtures: int = 10, channel_mode: str = "ci"):
        if kind not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {kind!r}")
        if channel_mode not in ("ci", "ca"):
            raise ValueError(f"channel_mode must be ci or ca, got {channel_mode!r}")
        self.kind, self.c, self.m = kind, in_channels, mixtures
        self.autoregressive_channels = channel_mode == "ca" and in_channels > 1
        self.coefficients = self.c * (self.c - 1) // 2 if self.autoregressive_channels else 0

    @property
    def channels(self) -> int:
        if self.kind == "bernoulli":
            return self.c
        return self.m * (1 + 2 * self.c + self.coefficients)

    def split(self, params: torch.Tensor):
        """(log pi (N, M, ...), means (N, M, C, ...), log scales, tanh coefficients)."""
        n, m, c = params.shape[0], self.m, self.c
        rest = params.shape[2:]
        logits = params[:, :m]
        means = params[:, m : m + m * c].reshape(n, m, c, *rest)
        scales = params[:, m + m * c : m + 2 * m * c].reshape(n, m, c, *rest)
        coeffs = torch.tanh(params[:, m + 2 * m * c :].reshape(n, m, self.coefficients, *rest))
        return log_softmax(logits, dim=1), means, scales.clamp(min=LOG_SCALE_MIN), coeffs

    def _shifted(self, means: torch.Tensor, coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Means with the channel-autoregressive terms sum_{j<c} a_cj x_j (x: (N, C, ...))."""
        if not self.coefficients:
            return means
        out, k = [means[:, :, 0]], 0
        for ch in range(1, self.c):
            shift = sum(coeffs[:, :, k + j] * x[:, None, j] for j in range(ch))
            out.append(means[:, :, ch] + shift)
            k += ch
        return torch.stack(out, dim=2)

    def log_prob_map(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p per pixel (N, H, W) of x in [0, 1] (N, C, H, W) under params (N, P, H, W)."""
        if self.kind == "bernoulli":
            return -binary_cross_entropy_with_logits(params, x, reduction="none").sum(1)
        xb = to_bins(x)
        log_pi, means, log_scales, coeffs = self.split(params)
        means = self._shifted(means, coeffs, xb)
        per = log_bin_mass(xb[:, None], means, log_scales).sum(2)  # (N, M, H, W)
        return torch.logsumexp(log_pi + per, dim=1)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per image (N,), summed over pixels and channels."""
        return self.log_prob_map(params, x).flatten(1).sum(1)

    def sample_pixel(self, params: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One draw per row of params (N, P) of one pixel's C values, in [0, 1] (k / 255 for the
        mixture, {0, 1} for Bernoulli); channels in order ("ca": each given the previous)."""
        n, dev = params.shape[0], params.device

        def uniform(*shape: int) -> torch.Tensor:
            u = torch.rand(shape, generator=generator, device=generator.device).to(dev)
            return u.clamp(1e-5, 1.0 - 1e-5)

        if self.kind == "bernoulli":
            return (uniform(n, self.c) < torch.sigmoid(params)).to(params.dtype)
        log_pi, means, log_scales, coeffs = self.split(params)
        gumbel = -torch.log(-torch.log(uniform(n, self.m)))
        pick = (log_pi + gumbel).argmax(1)
        rows = torch.arange(n, device=dev)
        mean, log_scale = means[rows, pick], log_scales[rows, pick]  # (N, C)
        coef = coeffs[rows, pick]
        u = uniform(n, self.c)
        values: list[torch.Tensor] = []  # bin centres in [-1, 1]: what later channels read
        bins: list[torch.Tensor] = []
        k = 0
        for ch in range(self.c):
            mu = mean[:, ch]
            if self.coefficients and ch:
                mu = mu + sum(coef[:, k + j] * values[j] for j in range(ch))
                k += ch
            v = mu + torch.exp(log_scale[:, ch]) * (torch.log(u[:, ch]) - torch.log1p(-u[:, ch]))
            b = torch.round((v.clamp(-1.0, 1.0) + 1.0) * 127.5)
            bins.append(b)
            values.append(b * (2.0 / 255.0) - 1.0)
        return torch.stack(bins, 1) / 255.0

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """A picture in [0, 1] of a factorised model (N, C, H, W): the Bernoulli means, or the
        mixture's mean of the centres (channel-autoregressive terms at the previous means)."""
        if self.kind == "bernoulli":
            return torch.sigmoid(params)
        log_pi, means, _, coeffs = self.split(params)
        pi = log_pi.exp()[:, :, None]
        out: list[torch.Tensor] = []
        k = 0
        for ch in range(self.c):
            mu = means[:, :, ch]
            if self.coefficients and ch:
                mu = mu + sum(coeffs[:, :, k + j] * out[j][:, None] for j in range(ch))
                k += ch
            out.append((pi[:, :, 0] * mu).sum(1).clamp(-1.0, 1.0))
        return (torch.stack(out, 1) + 1.0) / 2.0
