"""Observation-time variants of a base dataset (disentanglement_lib's colour and noisy dSprites).

A variant turns the stored grey image into the observation, drawing its randomness from the
caller's RandomState in disentanglement_lib's order and shapes (NHWC draws), so that metric
sampling can follow dlib's RNG stream exactly. ``apply_torch`` is the same transform on a device
(training), from uniforms the caller draws (``uniform_shape`` of them per image): training
draws them from its counter-based stream, so that eager, compiled, graph-replayed and resumed
steps see the same numbers. Equal in distribution to ``apply``, not bit-equal.
"""

from __future__ import annotations

import abc

import numpy as np


class Variant(abc.ABC):
    name: str
    channels: int

    @abc.abstractmethod
    def apply(self, x: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        """x: float32 (N, 1, H, W) in [0, 1] -> float32 (N, channels, H, W)."""

    @abc.abstractmethod
    def uniform_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The U(0, 1) values one image of ``apply_torch`` consumes."""

    @abc.abstractmethod
    def apply_torch(self, x, uniforms):
        """The same transform on a torch tensor (N, 1, H, W) -> (N, channels, H, W), with
        ``uniforms`` (N, *uniform_shape(H, W)) in (0, 1)."""


class ColorVariant(Variant):
    """Grey sprite times a random RGB colour in [0.5, 1) per observation (dlib ColorDSprites)."""

    name = "color"
    channels = 3

    def apply(self, x: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        n = x.shape[0]
        color = rng.uniform(0.5, 1.0, size=(n, 1, 1, 3)).astype(np.float32)  # dlib's NHWC draw
        return np.repeat(x, 3, axis=1) * color.transpose(0, 3, 1, 2)

    def uniform_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (3, 1, 1)

    def apply_torch(self, x, uniforms):
        color = uniforms * 0.5 + 0.5
        return x.expand(-1, 3, -1, -1) * color.to(x.dtype)


class NoisyVariant(Variant):
    """Sprite on uniform RGB noise: min(x + U(0, 1), 1) per pixel and channel (dlib's
    NoisyDSprites)."""

    name = "noisy"
    channels = 3

    def apply(self, x: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        n, _, h, w = x.shape
        noise = rng.uniform(0.0, 1.0, size=(n, h, w, 3)).astype(np.float32).transpose(0, 3, 1, 2)
        return np.minimum(np.repeat(x, 3, axis=1) + noise, 1.0)

    def uniform_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (3, height, width)

    def apply_torch(self, x, uniforms):
        import torch

        return torch.clamp(x.expand(-1, 3, -1, -1) + uniforms.to(x.dtype), max=1.0)


VARIANTS: dict[str, type[Variant]] = {"color": ColorVariant, "noisy": NoisyVariant}
