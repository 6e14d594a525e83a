"""St-RKM's pictures: reconstructions psi(U h(x)), samples of the codes' Gaussian, traversals of
each code over [-5, 5] (the authors' ``rkm_gen.py`` sweeps 35 values; 11 shown here) and the
factor heat maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...stages.pictures import _decode, _figure, _grid, _show, factor_heatmaps
from ...stages.pictures import reconstructions as _reconstructions
from ...stages.pictures import traversals as _traversals

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
    std = np.sqrt(np.diag(network.code_cov.detach().cpu().numpy()))
    labels = [f"h{i} sd {s:.2f}" for i, s in enumerate(std)]
    title = f"code traversals, h_i from {-LIMIT:g} to {LIMIT:g}"
    return _traversals(network, x, path, STEPS, LIMIT, labels, title)


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
