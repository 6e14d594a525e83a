"""Procedural dSprites: the official 737,280-image grid rendered locally, no download.

Geometry (METHODS.md section 1, measured on the official traversal GIF): the sprite's reference
centre is at ``64 * (0.25 + 0.5 * pos)`` px on both axes (pos = linspace(0, 1, 32)); the square's
side is ``20 * scale`` px; the ellipse and the heart outline are fitted to the GIF (constants
below and ``benchmarks/dsprites_fidelity.py``); orientation turns the sprite counter-clockwise on
screen about its centre; a pixel is on when at least 90 % of its area is covered (hard edges).

How it is fast: coverage is measured on a sub-pixel grid of 31 x 31 samples per pixel. Sprite
centres advance by 32/31 px per position step, i.e. by exactly 32 sub-pixel cells, so for one
(shape, scale, orientation) a single sub-pixel rasterisation of the sprite, box-filtered once,
gives the coverage of every pixel at every one of the 32 x 32 positions by pure indexing:
pixel i of position p reads the box sum at cell ``31 * i - 32 * p``. The full grid is 720 such
rasterisations plus gathers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .catalog import DSPRITES_SIZES

SUB = 31  # sub-pixel samples per pixel and axis; 32 px per 31 position steps makes this exact
PATCH_PX = 32  # sprite patch (px); the largest sprite fits in a 30 px disc
PATCH = PATCH_PX * SUB  # patch size in sub-pixel cells
CENTRE = PATCH // 2  # sprite centre in patch cells (16 px)
IMAGE_PX = 64

SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
# linspace(0, 2*pi, 40): index 39 is a full turn, the same image as index 0 (as in the original).
ORIENTATIONS = np.linspace(0.0, 2.0 * math.pi, 40)
POSITIONS = np.linspace(0.0, 1.0, 32)


# Heart outline: distance from the centre to the boundary (px, scale 1) at angles
# linspace(0, pi, 14) measured clockwise on screen from straight up (the notch between the lobes)
# to straight down (the tip); the left half mirrors the right. Fitted to the 192 heart frames of
# the official GIF (``benchmarks/dsprites_fidelity.py --fit``): the original heart is a custom
# vertex list that was never published, and the classic heart curve misses by ~15 px a frame.
HEART_RADII = (
    6.572,
    9.626,
    11.214,
    11.706,
    11.696,
    10.819,
    9.421,
    7.968,
    7.005,
    6.448,
    6.316,
    6.537,
    7.414,
    10.087,
)


@dataclass(frozen=True)
class Geometry:
    """Sprite outlines at scale 1, in pixels, centred on the reference centre, y pointing down.

    The square is the official one (side 20 px); the ellipse semi-axes and the heart radii were
    fitted to the official GIF by ``benchmarks/dsprites_fidelity.py --fit``.
    """

    square_half: float = 10.0
    ellipse_a: float = 13.176
    ellipse_b: float = 7.612
    heart_radii: tuple[float, ...] = HEART_RADII
    coverage: float = 0.9  # a pixel is on when at least this share of it is covered


GEOMETRY = Geometry()


def outline(shape: str, geometry: Geometry = GEOMETRY, n: int = 192) -> np.ndarray:
    """Closed outline (k, 2) of the sprite at scale 1, orientation 0; (x, y) in px, y down."""
    g = geometry
    if shape == "square":
        s = g.square_half
        return np.array([[-s, -s], [s, -s], [s, s], [-s, s]], dtype=np.float64)
    if shape == "ellipse":
        a = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
        return np.stack([g.ellipse_a * np.cos(a), g.ellipse_b * np.sin(a)], axis=1)
    if shape == "heart":
        rho = np.asarray(g.heart_radii)
        phi = np.linspace(0.0, math.pi, len(rho))
        right = np.stack([rho * np.sin(phi), -rho * np.cos(phi)], axis=1)
        left = right[-2:0:-1] * np.array([-1.0, 1.0])
        return np.concatenate([right, left], axis=0)
    raise ValueError(f"unknown dSprites shape {shape!r}; expected one of {SHAPES}")


def _transform(points: np.ndarray, scale: float, angle: float) -> np.ndarray:
    """Scale, then turn counter-clockwise on screen (y down) by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    x, y = points[:, 0] * scale, points[:, 1] * scale
    return np.stack([x * c + y * s, -x * s + y * c], axis=1)


def rasterise(polygon: np.ndarray) -> np.ndarray:
    """Even-odd fill of a polygon (px, relative to the patch centre) on the sub-pixel grid.

    Returns a (PATCH, PATCH) uint8 array; cell (v, u) is on when its centre is inside.
    """
    p0 = polygon
    p1 = np.roll(polygon, -1, axis=0)
    y = (np.arange(PATCH) + 0.5) / SUB - PATCH_PX / 2  # cell-centre rows, px from the centre
    y0, y1 = p0[None, :, 1], p1[None, :, 1]
    yy = y[:, None]
    crosses = (y0 <= yy) != (y1 <= yy)
    # Horizontal edges give 0/0 here; they never cross a cell-centre row, so they are masked out.
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (yy - y0) / (y1 - y0)
        x = p0[None, :, 0] + t * (p1[None, :, 0] - p0[None, :, 0])
        # First cell whose centre is at or right of the crossing.
        u = np.ceil((x + PATCH_PX / 2) * SUB - 0.5)
    rows, _ = np.nonzero(crosses)
    cols = np.clip(u[crosses], 0, PATCH).astype(np.int64)
    toggles = np.bincount(rows * (PATCH + 1) + cols, minlength=PATCH * (PATCH + 1))
    toggles = toggles.reshape(PATCH, PATCH + 1)[:, :PATCH]
    return (np.cumsum(toggles, axis=1) & 1).astype(np.uint8)


def coverage_mask(inside: np.ndarray, coverage: float = GEOMETRY.coverage) -> np.ndarray:
    """Box sums of SUB x SUB cells starting at every cell, thresholded: (PATCH-SUB+1)^2 bool."""
    integral = np.zeros((PATCH + 1, PATCH + 1), dtype=np.int32)
    np.cumsum(np.cumsum(inside, axis=0, dtype=np.int32), axis=1, out=integral[1:, 1:])
    box = (
        integral[SUB:, SUB:]
        - integral[:-SUB, SUB:]
        - integral[SUB:, :-SUB]
        + integral[:-SUB, :-SUB]
    )
    return box >= math.ceil(coverage * SUB * SUB - 1e-9)


def _position_index() -> np.ndarray:
    """(32 positions, 64 pixels) box index per axis; -1 where the patch does not reach."""
    # Centre of position p in sub-pixel cells: 31 * 16 + 32 * p. Pixel i's first sample cell,
    # relative to the patch (centre at CENTRE): 31 * i - 32 * p (+ CENTRE - 31 * 16 = 0).
    p = np.arange(32)[:, None]
    i = np.arange(IMAGE_PX)[None, :]
    idx = SUB * i - 32 * p + (CENTRE - SUB * 16)
    valid = (idx >= 0) & (idx <= PATCH - SUB)
    return np.where(valid, idx, -1)


_POS_INDEX = _position_index()


def render_combo(
    shape: int, scale: int, orientation: int, geometry: Geometry = GEOMETRY
) -> np.ndarray:
    """All 32 x 32 positions of one (shape, scale, orientation): bool (pos_x, pos_y, 64, 64)."""
    if orientation == len(ORIENTATIONS) - 1:
        orientation = 0  # a full turn: identical to orientation 0, as in the official data
    poly = _transform(outline(SHAPES[shape], geometry), SCALES[scale], ORIENTATIONS[orientation])
    mask = coverage_mask(rasterise(poly), geometry.coverage)
    # Append one off row/column: index -1 (outside the patch) reads it.
    padded = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=bool)
    padded[:-1, :-1] = mask
    rows = padded[_POS_INDEX]  # (pos_y, 64 y, box x)
    out = rows[:, :, _POS_INDEX]  # (pos_y, 64 y, pos_x, 64 x)
    return out.transpose(2, 0, 1, 3)


def render_factors(factors: np.ndarray, geometry: Geometry = GEOMETRY) -> np.ndarray:
    """uint8 images (n, 1, 64, 64), values 0/255, for dSprites factor vectors
    (shape, scale, orientation, pos_x, pos_y)."""
    factors = np.asarray(factors, dtype=np.int64)
    out = np.zeros((len(factors), 1, IMAGE_PX, IMAGE_PX), dtype=np.uint8)
    combo = (factors[:, 0] * 6 + factors[:, 1]) * 40 + np.where(
        factors[:, 2] == 39, 0, factors[:, 2]
    )
    for key in np.unique(combo):
        sel = np.nonzero(combo == key)[0]
        sh, rest = divmod(int(key), 240)
        sc, ori = divmod(rest, 40)
        imgs = render_combo(sh, sc, ori, geometry)
        out[sel, 0] = imgs[factors[sel, 3], factors[sel, 4]] * np.uint8(255)
    return out


def render_grid_packed(progress: bool = False, geometry: Geometry = GEOMETRY) -> np.ndarray:
    """The full grid in dSprites row order, bit-packed: uint8 (737280, 1, 64, 8)."""
    from tqdm import tqdm

    n_shape, n_scale, n_ori, n_x, n_y = DSPRITES_SIZES
    per_combo = n_x * n_y
    out = np.empty((n_shape * n_scale * n_ori * per_combo, 1, IMAGE_PX, IMAGE_PX // 8), np.uint8)
    combos = [(s, c, o) for s in range(n_shape) for c in range(n_scale) for o in range(n_ori)]
    cache: dict[tuple[int, int], np.ndarray] = {}
    for k, (s, c, o) in enumerate(
        tqdm(combos, desc="render dSprites", unit="combo", disable=not progress, mininterval=1.0)
    ):
        if o == n_ori - 1:
            packed = cache[(s, c)]  # orientation 39 == orientation 0
        else:
            packed = np.packbits(render_combo(s, c, o, geometry), axis=-1).reshape(
                per_combo, 1, 64, 8
            )
            if o == 0:
                cache[(s, c)] = packed
        out[k * per_combo : (k + 1) * per_combo] = packed
    return out
