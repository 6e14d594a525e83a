"""The training data resident on the device, and the per-step draw of a batch.

Sampling follows disentanglement_lib's semi-supervised input pipeline:

- unlabelled: each step, B images drawn uniformly at random with replacement from the whole
  dataset (rows of an official test split excepted). The unlabelled stream may show images of
  the labelled pool, validation rows included: they come without labels, as in dlib;
- labelled: B_l (image, label) pairs from the TRAINING part of the labelled pool only (mask rows
  with is_validation False), cycled in pool order: step s uses pool positions
  (s * B_l + i) mod n_train, i < B_l, exactly dlib's ``labelled_set.repeat().batch(B_l)``.
  Validation rows are never uploaded to the device.

Binary datasets (dSprites) stay bit-packed on the device (737,280 images: 377 MB); the B sampled
rows are unpacked with shifts and masks on the device. Indices, Gaussian noise and the
variants' uniforms (colour / noisy dSprites, ``dataset.variant.apply_torch``) come from the
counter-based generator in :mod:`.rng`, keyed per model (the variant with a key of its own), so
drawing a batch needs no host round trip and no generator state, and eager, compiled,
graph-replayed and resumed steps draw the same numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..data.base import FactorDataset
from ..errors import SemidisentError
from ..supervision.mask import SupervisionMask
from .rng import counter_constants, random_bits, to_index, to_normal, to_uniform

UPLOAD_ROWS = 65536


class Batch(NamedTuple):
    """One step's inputs for K models (K = keys passed to :meth:`DeviceData.draw`)."""

    x_u: torch.Tensor  # (K, B, C, H, W) float in [0, 1]
    x_l: torch.Tensor  # (B_l, C, H, W) shared by the K models, or (K, B_l, ...) with a variant
    y_l: torch.Tensor  # (B_l, F) int64, -1 where unobserved
    obs_l: torch.Tensor  # (B_l, F) bool
    eps_u: torch.Tensor  # (K, B, L) standard normal
    eps_l: torch.Tensor  # (K, B_l, L)
    u_rep: torch.Tensor  # (K, B_l, F) uniform (0, 1): the replacement draws
    u_extra: torch.Tensor  # (K, n) uniform (0, 1): the model family's own draws (n may be 0)


def _upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Copy a (possibly memory-mapped) uint8 array to the device in chunks (bounded host RAM)."""
    out = torch.empty(array.shape, dtype=torch.uint8, device=device)
    for start in range(0, len(array), UPLOAD_ROWS):
        stop = min(len(array), start + UPLOAD_ROWS)
        out[start:stop] = torch.from_numpy(np.array(array[start:stop], copy=True))
    return out


class DeviceData:
    def __init__(
        self,
        dataset: FactorDataset,
        mask: SupervisionMask,
        device: torch.device,
        batch_size: int,
        labelled_batch_size: int,
        num_latent: int,
        extra_uniforms: int = 0,
    ):
        c, h, w = dataset.stored_shape
        self.device = device
        self.packed = dataset.store.binary
        self.stored_shape = (c, h, w)
        self.observation_shape = dataset.observation_shape
        self.variant = dataset.variant
        self.batch_size = batch_size
        self.labelled_batch_size = labelled_batch_size
        self.num_latent = num_latent
        self.num_factors = mask.labels.shape[1]
        self.images = _upload(dataset.store.raw, device)
        self.num_rows = dataset.num_rows
        self.candidates: torch.Tensor | None = None
        if dataset.holdout is not None and len(dataset.holdout):
            keep = np.setdiff1d(np.arange(dataset.num_rows), dataset.holdout)
            self.candidates = torch.from_numpy(keep).to(device)
        train = mask.train
        if len(train) == 0:
            raise SemidisentError(
                "the labelled pool has no training rows (all are validation); "
                "lower supervision.validation_fraction or raise supervision.n_labels"
            )
        rows = torch.from_numpy(mask.rows[train].astype(np.int64)).to(device)
        self.pool_images = self.images[rows]
        self.pool_labels = torch.from_numpy(mask.labels[train].astype(np.int64)).to(device)
        self.pool_observed = torch.from_numpy(mask.observed[train].astype(bool)).to(device)
        self.pool_rows = mask.rows[train].astype(np.int64)
        self.n_pool = len(train)
        b, bl, lat, f = batch_size, labelled_batch_size, num_latent, self.num_factors
        # Layout of one step's random values per model: [indices | eps_u | eps_l | u_rep |
        # extra]; the family's extra draws come last, so that they never move the others.
        self._split = (b, b * lat, bl * lat, bl * f, extra_uniforms)
        self._counters = counter_constants(sum(self._split), device)
        if self.variant is not None:
            self._variant_shape = self.variant.uniform_shape(*self.observation_shape[1:])
            per_image = int(np.prod(self._variant_shape))
            self._variant_split = (b * per_image, bl * per_image)
            self._variant_counters = counter_constants(sum(self._variant_split), device)
        self._positions = torch.arange(bl, dtype=torch.int64, device=device)
        self._shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=device)

    @property
    def resident_bytes(self) -> int:
        return (self.images.numel() + self.pool_images.numel()) * self.images.element_size()

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        """Stored uint8 rows (n, C, H, W or W/8 packed) -> float32 (n, C, H, W) in [0, 1]."""
        if self.packed:
            # Big-endian bit order of np.packbits: the first pixel is the highest bit.
            bits = (stored.unsqueeze(-1) >> self._shifts) & 1
            width = self.stored_shape[2]
            return bits.flatten(-2)[..., :width].to(torch.float32)
        return stored.to(torch.float32) * (1.0 / 255.0)

    def draw(self, keys: torch.Tensor, step: torch.Tensor) -> Batch:
        """The batch of step ``step`` for models with data keys ``keys`` (K,), before variants."""
        k = keys.shape[0]
        b, bl, lat, f = self.batch_size, self.labelled_batch_size, self.num_latent, self.num_factors
        bits = random_bits(keys, step, self._counters)
        r_idx, r_eu, r_el, r_u, r_x = torch.split(bits, self._split, dim=1)
        n = self.num_rows if self.candidates is None else len(self.candidates)
        idx = to_index(r_idx, n)
        if self.candidates is not None:
            idx = self.candidates[idx]
        x_u = self.decode(self.images[idx.reshape(-1)]).view(k, b, *self.stored_shape)
        pos = (step * bl + self._positions) % self.n_pool
        x_l = self.decode(self.pool_images[pos])
        return Batch(
            x_u=x_u,
            x_l=x_l,
            y_l=self.pool_labels[pos],
            obs_l=self.pool_observed[pos],
            eps_u=to_normal(r_eu).view(k, b, lat),
            eps_l=to_normal(r_el).view(k, bl, lat),
            u_rep=to_uniform(r_u).view(k, bl, f),
            u_extra=to_uniform(r_x),
        )

    def apply_variant(self, batch: Batch, keys: torch.Tensor, step: torch.Tensor) -> Batch:
        """Colour / noise on the device, from the counter-based stream of each model's variant
        key (``keys`` (K,)) at this step: the labelled batch gets its own draws per model."""
        if self.variant is None:
            return batch
        k = batch.x_u.shape[0]
        bits = random_bits(keys, step, self._variant_counters)
        u_u, u_l = (to_uniform(r) for r in torch.split(bits, self._variant_split, dim=1))
        shape = self._variant_shape
        x_u = self.variant.apply_torch(batch.x_u.flatten(0, 1), u_u.reshape(-1, *shape)).view(
            k, -1, *self.observation_shape
        )
        x_l = batch.x_l if batch.x_l.dim() == 4 else batch.x_l[0]
        x_l = self.variant.apply_torch(x_l.repeat(k, 1, 1, 1), u_l.reshape(-1, *shape)).view(
            k, -1, *self.observation_shape
        )
        return batch._replace(x_u=x_u, x_l=x_l)
