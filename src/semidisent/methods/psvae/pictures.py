"""Pictures of a partially-specified VAE for `semidisent evaluate`:

- ``reconstructions.png``: observations and the decoder's mean from the encoder's deterministic
  values;
- ``conditional_samples.png``: p(x | y, rest) for each class of the first supervised categorical
  (rows) with the other variables drawn from their priors (columns: one draw per column, shared
  by every row): content fixed along a row, style fixed down a column;
- ``analogies_<variable>.png`` per supervised variable: real images (first column) with their
  other variables inferred and kept, the declared variable swept over its values (a
  categorical's classes, a gaussian's label values): style fixed along a row, content fixed down
  a column;
- the factor heat maps (mutual information, DCI importance) when the factor metrics ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...objectives.relaxed import one_hot, standardised_label
from ...stages.pictures import _figure, _grid, _show, factor_heatmaps, reconstructions
from .networks import PSNetwork

MAX_COLUMNS = 10


def _save(picture: np.ndarray, title: str, path: Path, cols: int, rows: int) -> Path:
    fig = _figure(1.0 * cols + 0.6, 1.0 * rows + 0.8)
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, picture)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _mean_image(net: PSNetwork, values: dict[str, torch.Tensor]) -> np.ndarray:
    return torch.sigmoid(net.decode(net.code(values))).float().cpu().numpy()


def _prior_draw(net: PSNetwork, n: int, rng: np.random.RandomState) -> dict[str, torch.Tensor]:
    """n joint draws of every variable from p (uniform classes, N(0, I) or the conditional
    gaussian's mean + sigma * eps), in p's order."""
    dev = next(net.parameters()).device
    values: dict[str, torch.Tensor] = {}
    for v in net.spec.generation_order:
        if v.categorical:
            values[v.name] = one_hot(
                torch.as_tensor(rng.randint(v.size, size=n), device=dev), v.size
            )
        else:
            eps = torch.as_tensor(rng.standard_normal((n, v.size)), dtype=torch.float32, device=dev)
            mean, log_std = net.prior(v, values, eps)
            values[v.name] = mean + torch.exp(log_std) * eps
    return values


def _sweep(net: PSNetwork, name: str) -> torch.Tensor:
    """The values a declared variable is swept over: one-hot classes, or the standardised label
    values of a supervised gaussian (at most MAX_COLUMNS, evenly spaced)."""
    v = net.spec.variable(name)
    dev = next(net.parameters()).device
    if v.categorical:
        return one_hot(torch.arange(min(v.size, MAX_COLUMNS), device=dev), v.size)
    k = net.config.label_sizes[net.spec.label_index(v)]
    labels = torch.as_tensor(np.unique(np.linspace(0, k - 1, min(k, MAX_COLUMNS)).round()))
    return standardised_label(labels.to(dev), k)[:, None]


@torch.inference_mode()
def conditional_samples(
    net: PSNetwork, name: str, path: Path, cols: int = 8, seed: int = 0
) -> Path:
    sweep = _sweep(net, name)
    rows = len(sweep)
    draw = _prior_draw(net, cols, np.random.RandomState(seed))
    values = {k: v.repeat(rows, 1) for k, v in draw.items()}
    values[name] = sweep.repeat_interleave(cols, 0)
    images = _mean_image(net, values)
    title = f"p(x | {name}, rest): {name} by row, the other variables drawn from p by column"
    return _save(_grid(images, rows, cols), title, path, cols, rows)


@torch.inference_mode()
def analogies(net: PSNetwork, name: str, x: np.ndarray, path: Path) -> Path:
    dev = next(net.parameters()).device
    xt = torch.as_tensor(x, device=dev)
    inferred = {k: value for k, (value, _) in net.deterministic(xt).items()}
    sweep = _sweep(net, name)
    n, cols = len(x), len(sweep)
    values = {k: v.repeat_interleave(cols, 0) for k, v in inferred.items()}
    values[name] = sweep.repeat(n, 1)
    images = _mean_image(net, values).reshape(n, cols, *x.shape[1:])
    grid = np.concatenate([x[:, None], images], axis=1).reshape(n * (cols + 1), *x.shape[1:])
    title = f"{name} swept (columns) with the rest inferred from the first column's image"
    return _save(_grid(grid, n, cols + 1), title, path, cols + 1, n)


def write_pictures(
    net: PSNetwork, dataset: Any, out_dir: str | Path, details: dict[str, Any], seed: int = 0
) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    x = dataset.observations(dataset.sample_factors(8, rng), rng)
    written = [reconstructions(net, x, out / "reconstructions.png")]
    supervised = [v for v in net.spec.variables if v.supervised]
    first = next((v for v in supervised if v.categorical), None)
    if first is not None:
        written.append(
            conditional_samples(net, first.name, out / "conditional_samples.png", seed=seed)
        )
    for v in supervised:
        written.append(analogies(net, v.name, x[:6], out / f"analogies_{v.name}.png"))
    written += factor_heatmaps(details, tuple(dataset.factor_names), out)
    return written
