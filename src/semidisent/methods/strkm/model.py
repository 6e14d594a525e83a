"""The St-RKM objective (the authors' ``stiefel_rkm_model.RKM_Stiefel.forward``), the exact U after
training (``final_compute``) and the codes' Gaussian (``rkm_gen.py``); seed_models.md section 3.

Per batch of n images, Phi the batch-centred features phi(x_i) - mean_batch (n x m), U (m x l)
with orthonormal columns (the parameter is U^T), sigma = noise_level, c = c_accu, eps ~ N(0, I_l):

    pca   = trace(C - U U^T C) / n,  C = Phi^T Phi     (= (1/n) sum_i ||(I - U U^T) Phi_i||^2)
    deterministic: recon = c / (2n) sum_i ||x_i - s(psi(U U^T Phi_i))||^2
    noisy_u:       recon = c / (2n) sum_i ||x_i - s(psi(U (U^T Phi_i + sigma eps_i)))||^2
    split:         recon = c / (2n) sum_i ||x_i - s(psi(U U^T Phi_i))||^2
                   split = c / (2n) sum_i ||s(psi(U U^T Phi_i))
                                             - s(psi(U (U^T Phi_i + sigma eps_i)))||^2
    loss  = pca + recon (+ split)

(s: the sigmoid the authors' decoder ends with; sums over pixels.) trace(U U^T C) is computed as
||Phi U||_F^2, the same expression, with one (n x m)(m x l) product instead of two m x m ones.
The eps of the noisy variants are the batch's standard normals (``eps_u``: l = model.num_latent
per example), so a batched run's models draw exactly what separate runs draw.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...objectives.s2vae import ModelBatch
from .networks import StRKMNetwork

log = logging.getLogger(__name__)

STAT_NAMES = ("loss", "pca", "recon", "split", "orthogonality")
VARIANTS = ("deterministic", "noisy_u", "split")


def pca_error(phi: torch.Tensor, u_t: torch.Tensor) -> torch.Tensor:
    """trace(C - U U^T C) / n for centred features phi (n, m) and U^T (l, m)."""
    return (phi.square().sum() - (phi @ u_t.T).square().sum()) / phi.shape[0]


class StRKM(nn.Module):
    stat_names: ClassVar[tuple[str, ...]] = STAT_NAMES

    def __init__(self, network: StRKMNetwork, variant: str, amp_dtype: torch.dtype | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(
                f"St-RKM variant must be one of {', '.join(VARIANTS)}, got {variant!r}"
            )
        self.network = network
        self.variant = variant
        self.amp_dtype = amp_dtype

    def _amp(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.network.u_t.device.type, dtype=self.amp_dtype)

    def forward(
        self, batch: ModelBatch, hyper: dict[str, torch.Tensor], step: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch.x_u
        n = x.shape[0]
        net = self.network
        u_t = net.u_t
        with self._amp():
            phi = net.features(x)
        # The PCA term in float32 even under autocast (sums of squares over the batch).
        phi = phi.float()
        phi = phi - phi.mean(dim=0)
        pca = pca_error(phi, u_t)
        h = phi @ u_t.T
        if self.variant == "deterministic":
            codes = h
        elif self.variant == "noisy_u":
            codes = h + hyper["noise_level"] * batch.eps_u
        else:  # split: both decoder passes as one call
            codes = torch.cat([h, h + hyper["noise_level"] * batch.eps_u])
        with self._amp():
            images = torch.sigmoid(net.decoder(codes @ u_t).float()).view(-1, *x.shape[1:])
        scale = 0.5 * hyper["c_accu"] / n
        recon = (images[:n] - x).square().sum() * scale
        if self.variant == "split":
            split = (images[:n] - images[n:]).square().sum() * scale
        else:
            split = torch.zeros_like(recon)
        loss = pca + recon + split
        with torch.no_grad():
            # In float64: in float32 under the fast path's TF32 matmuls the product itself is
            # off by ~1e-4 and the curve would show that rounding, not U's orthonormality.
            u64 = u_t.double()
            eye = torch.eye(u_t.shape[0], dtype=torch.float64, device=u_t.device)
            ortho = (u64 @ u64.T - eye).abs().amax().to(loss.dtype)
        return loss, torch.stack([loss, pca, recon, split, ortho]).detach()


def _rows(num_rows: int, final_rows: int, seed: int) -> np.ndarray:
    """The rows whose features fit U: every row, or ``final_rows`` of them without replacement
    (seeded; sorted so that memory-mapped stores read forward)."""
    if final_rows == 0 or final_rows >= num_rows:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng(seed).choice(num_rows, final_rows, replace=False))


@torch.no_grad()
def dataset_features(
    network: StRKMNetwork, dataset: Any, rows: np.ndarray, batch_size: int = 1024
) -> torch.Tensor:
    """phi of the dataset's rows (float64, on the CPU), in the network's device."""
    device = network.u_t.device
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = dataset.images(rows[start : start + batch_size])
        x = torch.from_numpy(np.ascontiguousarray(chunk)).to(device).float()
        x = x * torch.tensor(1.0 / 255.0, dtype=torch.float32, device=device)
        out.append(network.features(x).double().cpu())
    return torch.cat(out)


def exact_projection(features: torch.Tensor, num_latent: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U (m x l), mean (m,)): the top-l eigenvectors of the centred features' covariance
    Phi^T Phi, in decreasing eigenvalue order, each signed so that its largest-magnitude entry
    is positive (eigenvectors are defined up to sign: this makes U a function of the data)."""
    mean = features.mean(dim=0)
    phi = features - mean
    values, vectors = torch.linalg.eigh(phi.T @ phi)
    u = vectors[:, torch.argsort(values, descending=True)[:num_latent]]
    pivot = u.abs().argmax(dim=0)
    sign = torch.sign(u[pivot, torch.arange(u.shape[1])])
    return u * torch.where(sign == 0, 1.0, sign), mean


def fit_final(network: StRKMNetwork, dataset: Any, final_rows: int, seed: int) -> dict[str, Any]:
    """The authors' post-training step, in place: U from the features of the dataset's rows
    (:func:`exact_projection`), the feature mean, and the Gaussian of the codes
    h_i = U^T (phi_i - mean) (sample mean and covariance + 1e-6 I: scikit-learn's
    ``GaussianMixture(1, covariance_type="full")`` fit, whose reg_covar is 1e-6)."""
    rows = _rows(dataset.num_rows, final_rows, seed)
    was_training = network.training
    network.eval()
    feats = dataset_features(network, dataset, rows)
    u, mean = exact_projection(feats, network.num_latent)
    codes = (feats - mean) @ u
    code_mean = codes.mean(dim=0)
    centred = codes - code_mean
    cov = centred.T @ centred / len(codes) + 1e-6 * torch.eye(codes.shape[1], dtype=codes.dtype)
    # ||U_trained^T U_exact||_F^2 / l: 1 when training had found the exact subspace.
    overlap = float((network.u_t.detach().double().cpu() @ u).square().sum()) / u.shape[1]
    with torch.no_grad():
        network.u_t.copy_(u.T.to(network.u_t))
        network.feature_mean.copy_(mean.to(network.feature_mean))
        network.code_mean.copy_(code_mean.to(network.code_mean))
        network.code_cov.copy_(cov.to(network.code_cov))
    network.train(was_training)
    info = {
        "rows": len(rows),
        "eigenvalues": (torch.diagonal(cov) - 1e-6).tolist(),
        "trained_subspace_overlap": overlap,
    }
    log.info("St-RKM: exact U from %d rows (trained subspace overlap %.3f)", len(rows), overlap)
    return info
