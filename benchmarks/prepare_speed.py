"""Time to render the full procedural dSprites grid and write the prepared artifact.

Baseline measured in the same run: a per-image renderer a user would write (PIL polygon on a
4x supersampled canvas, box-downsampled, thresholded at 90 % coverage), timed on a random
sample of images and extrapolated to the 737,280-image grid. Ours renders each
(shape, scale, orientation) once on a 31x31 sub-pixel grid and gathers all 1,024 positions.
Peak memory is measured in a fresh subprocess running `semidisent prepare`.

    python benchmarks/prepare_speed.py [--sample 2000]
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from semidisent.data import dsprites_render as render

ROOT = Path(__file__).resolve().parents[1]


def naive_render(factors: np.ndarray, ss: int = 4) -> np.ndarray:
    from PIL import Image, ImageDraw

    out = np.zeros((len(factors), 64, 64), dtype=bool)
    for i, (sh, sc, ori, px, py) in enumerate(factors):
        poly = render._transform(
            render.outline(render.SHAPES[sh]), render.SCALES[sc], render.ORIENTATIONS[ori]
        )
        cx, cy = 16 + 32 * px / 31, 16 + 32 * py / 31
        canvas = Image.new("L", (64 * ss, 64 * ss), 0)
        pts = [((x + cx) * ss, (y + cy) * ss) for x, y in poly]
        ImageDraw.Draw(canvas).polygon(pts, fill=255)
        cov = np.asarray(canvas, np.float32).reshape(64, ss, 64, ss).mean((1, 3)) / 255
        out[i] = cov >= 0.9
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, default=2000, help="images for the naive baseline")
    args = ap.parse_args()
    n_total = 737280
    rs = np.random.RandomState(0)
    f = np.stack([rs.randint(k, size=args.sample) for k in (3, 6, 40, 32, 32)], axis=1)
    t0 = time.perf_counter()
    naive_render(f)
    naive_s = (time.perf_counter() - t0) / args.sample * n_total

    t0 = time.perf_counter()
    packed = render.render_grid_packed()
    render_s = time.perf_counter() - t0
    del packed

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "prepared"
        cmd = [
            str(Path(sys.executable).parent / "semidisent"),
            "prepare",
            "-q",
            "--params",
            str(ROOT / "params.yaml"),
            "--out",
            str(out),
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        prepare_s = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6

    cpu = platform.processor() or platform.machine()
    import os

    print(f"device: CPU ({cpu}, {os.cpu_count()} cores), python {platform.python_version()}")
    print(f"{'':40s} {'seconds':>9s} {'ratio':>8s}")
    print(f"{'baseline: PIL 4x supersampled (extrap.)':40s} {naive_s:9.1f} {1.0:8.1f}")
    print(f"{'ours: render full grid':40s} {render_s:9.1f} {naive_s / render_s:8.1f}x")
    print(
        f"{'ours: semidisent prepare (end to end)':40s} {prepare_s:9.1f} "
        f"{naive_s / prepare_s:8.1f}x"
    )
    print(
        f"prepare peak memory: {peak_mb:.0f} MB (limit 4096); artifact on disk: {size_mb:.0f} MB"
        " (limit 450)"
    )


if __name__ == "__main__":
    main()
