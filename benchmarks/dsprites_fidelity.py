"""How close is the procedural dSprites renderer to the official images?

Renders the factor vector of every frame of the official traversal GIF (320 frames) and
counts mismatched pixels per frame, per shape; compares with the naive geometry from the
literature (classic heart curve, pixel-centre sampling) measured in the same run.
``--fit`` re-fits the ellipse semi-axes and the heart radii (Powell on a coverage hinge loss;
minutes), printing constants for ``semidisent/data/dsprites_render.py``.

    python benchmarks/dsprites_fidelity.py [--gif tests/data/dsprites_reference.gif] [--fit]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from semidisent.data import dsprites_render as render
from semidisent.data.dsprites_reference import FRAME_FACTORS, frame_mismatch, load_reference_frames

DEFAULT_GIF = Path(__file__).resolve().parents[1] / "tests" / "data" / "dsprites_reference.gif"


def classic_heart_radii(n: int = 14) -> tuple[float, ...]:
    """The classic heart curve x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t,
    scaled to the official 20 x 17 px box, as polar radii on the renderer's angles."""
    t = np.linspace(0, 2 * math.pi, 4000)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    x, y = x * 20 / np.ptp(x), y * 17 / np.ptp(y)
    y = y - (y.max() + y.min()) / 2
    ang = np.arctan2(x, -y)  # clockwise from straight up
    r = np.hypot(x, y)
    phis = np.linspace(0, math.pi, n)
    return tuple(float(r[np.argmin(np.abs(ang - p))]) for p in phis)


def report(name: str, geometry: render.Geometry, ref: np.ndarray) -> float:
    t0 = time.perf_counter()
    img = render.render_factors(FRAME_FACTORS, geometry)[:, 0] > 0
    mm = frame_mismatch(img, ref)
    parts = ", ".join(
        f"{s} {mm[FRAME_FACTORS[:, 0] == i].mean():5.2f}" for i, s in enumerate(render.SHAPES)
    )
    print(
        f"{name:34s} mean {mm.mean():5.2f} px/frame (max {mm.max():3d}; {parts})"
        f"  [{time.perf_counter() - t0:.1f} s]"
    )
    return float(mm.mean())


def fit(ref: np.ndarray) -> render.Geometry:
    from scipy.optimize import minimize

    def soft_cost(geometry: render.Geometry, shape: int) -> float:
        sel = FRAME_FACTORS[:, 0] == shape
        cov = coverage_images(FRAME_FACTORS[sel], geometry)
        on = ref[sel]
        return float(
            (np.maximum(0, 0.9 - cov)[on].sum() + np.maximum(0, cov - 0.9)[~on].sum()) / sel.sum()
        )

    g = render.GEOMETRY
    x = minimize(
        lambda v: soft_cost(dataclasses.replace(g, ellipse_a=v[0], ellipse_b=v[1]), 1),
        [g.ellipse_a, g.ellipse_b],
        method="Powell",
    ).x
    g = dataclasses.replace(g, ellipse_a=float(x[0]), ellipse_b=float(x[1]))
    x = minimize(
        lambda v: soft_cost(dataclasses.replace(g, heart_radii=tuple(v)), 2),
        list(g.heart_radii),
        method="Powell",
        options={"maxfev": 600},
    ).x
    return dataclasses.replace(g, heart_radii=tuple(round(float(v), 3) for v in x))


def coverage_images(factors: np.ndarray, geometry: render.Geometry) -> np.ndarray:
    """Pixel coverage in [0, 1] (before thresholding) for each factor vector."""
    out = np.zeros((len(factors), 64, 64))
    for i, (sh, sc, ori, px, py) in enumerate(factors):
        poly = render._transform(
            render.outline(render.SHAPES[sh], geometry),
            render.SCALES[sc],
            render.ORIENTATIONS[0 if ori == 39 else ori],
        )
        inside = render.rasterise(poly)
        integral = np.zeros((render.PATCH + 1, render.PATCH + 1))
        integral[1:, 1:] = inside.cumsum(0).cumsum(1)
        s = render.SUB
        box = (integral[s:, s:] - integral[:-s, s:] - integral[s:, :-s] + integral[:-s, :-s]) / s**2
        pad = np.zeros((box.shape[0] + 1, box.shape[1] + 1))
        pad[:-1, :-1] = box
        out[i] = pad[render._POS_INDEX[py]][:, render._POS_INDEX[px]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gif", type=Path, default=DEFAULT_GIF)
    ap.add_argument("--fit", action="store_true", help="re-fit ellipse and heart (slow)")
    args = ap.parse_args()
    ref = load_reference_frames(args.gif)
    naive = dataclasses.replace(
        render.GEOMETRY, heart_radii=classic_heart_radii(), ellipse_a=13.0, ellipse_b=7.0
    )
    base = report("baseline: classic heart, 26x14 ellipse", naive, ref)
    ours = report("semidisent renderer (fitted)", render.GEOMETRY, ref)
    print(f"mismatch ratio baseline / ours: {base / ours:.1f}x fewer wrong pixels")
    if args.fit:
        g = fit(ref)
        report("re-fitted", g, ref)
        print(
            f"ellipse_a={g.ellipse_a:.3f} ellipse_b={g.ellipse_b:.3f}\nheart_radii={g.heart_radii}"
        )


if __name__ == "__main__":
    main()
