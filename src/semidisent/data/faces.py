"""Procedural Lambertian faces: the structure of Siddharth et al.'s "intrinsic faces" experiment
(Extended Yale B, after Jampani et al.) without the download.

A face is an identity, a height map H(u, v) and an albedo A(u, v) (both drawn once per identity
from a fixed seed), seen under a distant light from direction l (azimuth, elevation). The image
is the Lambertian intrinsic-image model, exactly:

    n(u, v) = (-dH/du, -dH/dv, 1) / |(-dH/du, -dH/dv, 1)|           surface normal
    l       = (sin az cos el, sin el, cos az cos el)                 light direction (unit)
    I(u, v) = A(u, v) * max(0, n(u, v) . l)                          reflectance x shading

with u to the right, v upwards (image rows run downwards) and the viewer along +z. Height: an
ellipsoidal head with a nose, brow, eye sockets, lips and chin whose positions and sizes vary by
identity, plus a few smooth bumps of its own. Albedo: a skin tone, darker brows, eyes and lips,
and smooth blotches; 0 outside the face (black background).

Factors (a grid: one image per combination): identity (38, as Extended Yale B's subjects),
light_azimuth (9 values in [-60, 60] degrees) and light_elevation (5 values in [-40, 40]
degrees); 1,710 grayscale 32 x 32 images, rendered in well under a second.
"""

from __future__ import annotations

import math

import numpy as np

from .base import GridDataset
from .store import DenseStore

FACTORS = ("identity", "light_azimuth", "light_elevation")
IDENTITIES = 38
AZIMUTHS = np.linspace(-60.0, 60.0, 9)
ELEVATIONS = np.linspace(-40.0, 40.0, 5)
SIZES = (IDENTITIES, len(AZIMUTHS), len(ELEVATIONS))
SIZE = 32
# Identity i draws its shape and albedo from RandomState(SEED + i): the dataset is a pure
# function of this module.
SEED = 20171


def _grid(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) at pixel centres in [-1, 1]; v points up (row 0 is the top)."""
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    u, v = np.meshgrid(c, -c)
    return u, v


def _blob(u: np.ndarray, v: np.ndarray, cu: float, cv: float, su: float, sv: float) -> np.ndarray:
    return np.exp(-0.5 * (((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2))


def identity_maps(identity: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(height, albedo) of one identity, each (size, size)."""
    rng = np.random.RandomState(SEED + identity)
    u, v = _grid(size)
    a, b = rng.uniform(0.62, 0.8), rng.uniform(0.82, 0.95)  # head half-width and half-height
    inside = 1.0 - (u / a) ** 2 - (v / b) ** 2
    head = np.sqrt(np.clip(inside, 0.0, None)) * rng.uniform(0.55, 0.8)
    eye_u, eye_v = rng.uniform(0.22, 0.34), rng.uniform(0.12, 0.28)
    nose_v, mouth_v = rng.uniform(-0.2, -0.05), rng.uniform(-0.52, -0.38)
    height = (
        head
        + rng.uniform(0.2, 0.35) * _blob(u, v, 0.0, nose_v, rng.uniform(0.07, 0.12), 0.16)
        + 0.12 * _blob(u, v, 0.0, eye_v + 0.14, 0.35, 0.06)  # brow ridge
        - rng.uniform(0.1, 0.18) * _blob(u, v, -eye_u, eye_v, 0.1, 0.07)  # eye sockets
        - rng.uniform(0.1, 0.18) * _blob(u, v, eye_u, eye_v, 0.1, 0.07)
        + 0.06 * _blob(u, v, 0.0, mouth_v, rng.uniform(0.12, 0.2), 0.05)  # lips
        + 0.08 * _blob(u, v, 0.0, -b + 0.15, 0.2, 0.12)  # chin
    )
    for _ in range(3):  # smooth bumps of this identity's own
        height += rng.uniform(-0.06, 0.06) * _blob(
            u,
            v,
            rng.uniform(-a, a),
            rng.uniform(-b, b),
            rng.uniform(0.1, 0.3),
            rng.uniform(0.1, 0.3),
        )
    skin = rng.uniform(0.55, 0.95)
    albedo = skin * (
        1.0
        - rng.uniform(0.3, 0.6) * _blob(u, v, -eye_u, eye_v + 0.12, 0.11, 0.025)  # brows
        - rng.uniform(0.3, 0.6) * _blob(u, v, eye_u, eye_v + 0.12, 0.11, 0.025)
        - 0.5 * _blob(u, v, -eye_u, eye_v, 0.05, 0.035)  # eyes
        - 0.5 * _blob(u, v, eye_u, eye_v, 0.05, 0.035)
        - rng.uniform(0.2, 0.45) * _blob(u, v, 0.0, mouth_v, rng.uniform(0.1, 0.16), 0.035)
    )
    for _ in range(2):  # blotches
        albedo *= 1.0 + rng.uniform(-0.15, 0.15) * _blob(
            u, v, rng.uniform(-a, a), rng.uniform(-b, b), 0.2, 0.2
        )
    albedo = np.where(inside > 0, np.clip(albedo, 0.0, 1.0), 0.0)
    return height, albedo


def normals(height: np.ndarray) -> np.ndarray:
    """Unit surface normals (size, size, 3) of a height map on the [-1, 1] grid."""
    step = 2.0 / height.shape[0]
    d_v_rows, d_u = np.gradient(height, step)
    d_v = -d_v_rows  # rows run down, v runs up
    n = np.stack([-d_u, -d_v, np.ones_like(height)], axis=-1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def light(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])


def render(height: np.ndarray, albedo: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The Lambertian image albedo * max(0, n . l), float in [0, 1]."""
    return albedo * np.clip(normals(height) @ direction, 0.0, None)


def render_all(size: int = SIZE) -> np.ndarray:
    """uint8 (38 * 9 * 5, 1, size, size), rows in factor order (identity slowest)."""
    out = np.empty((*SIZES, 1, size, size), dtype=np.uint8)
    lights = [[light(az, el) for el in ELEVATIONS] for az in AZIMUTHS]
    for i in range(IDENTITIES):
        height, albedo = identity_maps(i, size)
        n = normals(height)
        for a in range(len(AZIMUTHS)):
            for e in range(len(ELEVATIONS)):
                shade = np.clip(n @ lights[a][e], 0.0, None)
                out[i, a, e, 0] = np.round(255.0 * np.clip(albedo * shade, 0.0, 1.0))
    return out.reshape(-1, 1, size, size)


def build(name: str, path: str | None = None, progress: bool = False) -> GridDataset:
    return GridDataset(name, FACTORS, DenseStore(render_all()), SIZES)
