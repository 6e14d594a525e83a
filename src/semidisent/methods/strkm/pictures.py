"""St-RKM's pictures: reconstructions psi(U h(x)), samples of the codes' Gaussian, traversals of
each code over [-5, 5] (the authors' ``rkm_gen.py`` sweeps 35 values; 11 shown here) and the
factor heat maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...stages.pictures import _decode, _encode, _figure, _grid, _show, factor_heatmaps
from ...stages.pictures import reconstructions as _reconstructions

LIMIT = 5.0
STEPS = 11


def samples(network: Any, path: Path, n: int = 64, seed: int = 0) -> Path:
    h = network.sample_codes(n, torch.Generator().manual_seed(seed)).numpy()
    side = int(np.ceil(np.sqrt(n)))
    fig = _figure(8, 8.4)
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, _grid(_decode(network, h), side, side))
    ax.set_title("samples: psi(U h), h ~ Gaussian fitted to the training codes")
    fig.tight_layout()
    fig.savefig(path)
    return path


def traversals(network: Any, x: np.ndarray, path: Path) -> Path:
    """One row per code: the code of ``x[0]`` with that coordinate swept over [-5, 5]; rows are
    labelled with the coordinate's standard deviation over the training codes (the scale the
    sweep should be read against)."""
    h, _ = _encode(network, x)
    d = network.num_latent
    std = np.sqrt(np.diag(network.code_cov.detach().cpu().numpy()))
    values = np.linspace(-LIMIT, LIMIT, STEPS)
    z = np.repeat(h[:1], d * STEPS, axis=0).reshape(d, STEPS, d)
    for i in range(d):
        z[i, :, i] = values
    images = _decode(network, z.reshape(d * STEPS, d))
    fig = _figure(1.0 * STEPS + 1.2, 1.0 * d + 0.8)
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, _grid(images, d, STEPS))
    size = images.shape[2] + 2
    ax.set_yticks([2 + size * i + size / 2 for i in range(d)])
    ax.set_yticklabels([f"h{i} sd {std[i]:.2f}" for i in range(d)], fontsize=8)
    ax.set_title(f"code traversals, h_i from {-LIMIT:g} to {LIMIT:g}")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_pictures(
    network: Any, dataset: Any, out_dir: str | Path, details: dict, seed: int = 0
) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    x = dataset.observations(dataset.sample_factors(16, rng), rng)
    written = [
        _reconstructions(network, x[:8], out / "reconstructions.png"),
        samples(network, out / "samples.png", seed=seed),
        traversals(network, x, out / "traversals.png"),
    ]
    return written + factor_heatmaps(details, tuple(dataset.factor_names), out)
