"""Pictures of a local-decoder VAE for `semidisent evaluate`. An autoregressive decoder's image
is a sample, drawn pixel by pixel (``PixelDecoder.sample``: batched over the images, one network
evaluation on a crop per pixel), so the counts are kept small and each title says how long its
sampling took:

- ``reconstructions.png``: observations and one sample of p(x | z = encoder mean);
- ``samples.png``: one sample of p(x | z) for z ~ N(0, I);
- ``traversals.png``: the TRAVERSED latents with the largest mean KL, swept over [-2, 2] from the
  first observation's mean;
- the factor heat maps when the factor metrics ran.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...stages.pictures import _figure, _grid, _show, factor_heatmaps

TRAVERSED = 8
STEPS = 7
LIMIT = 2.0


def _images(network: Any, z: torch.Tensor, seed: int) -> tuple[np.ndarray, float]:
    """(pictures (n, C, H, W), seconds): the likelihood's mean when factorised, else a sample."""
    dev = next(network.parameters()).device
    t0 = time.perf_counter()
    with torch.inference_mode():
        h = network.features(z.to(dev))
        out = network.pixel.picture(h, torch.Generator().manual_seed(seed))
    return out.float().cpu().numpy(), time.perf_counter() - t0


def _save(picture: np.ndarray, title: str, path: Path, cols: int, rows: int) -> Path:
    fig = _figure(1.0 * cols + 0.6, 1.0 * rows + 0.8)
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, picture)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _what(network: Any) -> str:
    return "sampled" if network.pixel.autoregressive else "mean"


def reconstructions(network: Any, x: np.ndarray, path: Path, seed: int) -> Path:
    dev = next(network.parameters()).device
    with torch.inference_mode():
        mean, _ = network.encode(torch.as_tensor(x, device=dev))
    recon, s = _images(network, mean, seed)
    n = len(x)
    title = f"observations (top), p(x | encoder mean) {_what(network)} (bottom; {s:.1f} s)"
    return _save(_grid(np.concatenate([x, recon]), 2, n), title, path, n, 2)


def samples(network: Any, path: Path, n: int = 16, seed: int = 0) -> Path:
    z = torch.randn(n, network.num_latent, generator=torch.Generator().manual_seed(seed))
    images, s = _images(network, z, seed)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    title = f"p(x | z), z ~ N(0, I), {_what(network)} ({s:.1f} s for {n})"
    return _save(_grid(images, rows, cols), title, path, cols, rows)


def traversals(network: Any, x: np.ndarray, path: Path, seed: int) -> Path:
    dev = next(network.parameters()).device
    with torch.inference_mode():
        mean, log_var = network.encode(torch.as_tensor(x, device=dev))
    kl = (0.5 * (mean.square() + log_var.exp() - 1.0 - log_var)).mean(0).cpu()
    dims = torch.argsort(kl, descending=True)[: min(TRAVERSED, network.num_latent)]
    values = torch.linspace(-LIMIT, LIMIT, STEPS)
    z = mean[:1].cpu().repeat(len(dims) * STEPS, 1)
    for i, d in enumerate(dims.tolist()):
        z[i * STEPS : (i + 1) * STEPS, d] = values
    images, s = _images(network, z, seed)
    title = (
        f"traversals of the {len(dims)} latents with the largest KL "
        f"({', '.join(f'z{d}' for d in dims.tolist())}), {-LIMIT:g} to {LIMIT:g} ({s:.1f} s)"
    )
    return _save(_grid(images, len(dims), STEPS), title, path, STEPS, len(dims))


def write_pictures(
    network: Any, dataset: Any, out_dir: str | Path, details: dict, seed: int = 0
) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    x = dataset.observations(dataset.sample_factors(64, rng), rng)
    written = [
        reconstructions(network, x[:8], out / "reconstructions.png", seed),
        samples(network, out / "samples.png", seed=seed),
        traversals(network, x, out / "traversals.png", seed),
    ]
    return written + factor_heatmaps(details, tuple(dataset.factor_names), out)
