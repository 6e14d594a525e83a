"""Pictures of a trained DRMM for `semidisent evaluate`:

- ``renderings.png``: top-down renderings of each class from the class alone: first column with
  the priors' modes as switches (pi_a > 1/2, each window's most frequent argmax), then draws of
  the switches from the EMA priors; each image scaled to its own range (renderings have no
  fixed scale);
- ``reconstructions.png``: images, their top-down rendering of the predicted class through the
  image's own switches (what the reconstruction term fits) and of the true class;
- ``templates.png``: the first layer's templates (the matched filters), each to its own range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...stages.pictures import _figure, _grid, _show
from .networks import DRMMNetwork

DRAWS = 7
MAX_CLASSES = 10


def _scaled(images: torch.Tensor) -> np.ndarray:
    """Each image to [0, 1] by its own min and max."""
    x = images.detach().float().cpu()
    flat = x.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    x = (x - lo.view(-1, 1, 1, 1)) / (hi - lo).clamp(min=1e-12).view(-1, 1, 1, 1)
    return x.numpy()


def _save(picture: np.ndarray, title: str, path: Path, cols: int, rows: int) -> Path:
    fig = _figure(0.9 * cols + 0.8, 0.9 * rows + 0.8)
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, picture)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


@torch.no_grad()
def renderings(net: DRMMNetwork, path: Path, seed: int = 0) -> Path:
    dev = next(net.parameters()).device
    k = min(net.config.num_classes, MAX_CLASSES)
    onehot = torch.eye(net.config.num_classes, device=dev)[:k]
    rows = []
    generator = torch.Generator().manual_seed(seed)
    for c in range(k):
        top = net.top(onehot[c : c + 1].repeat(DRAWS + 1, 1))
        mode = net.prior_switches(1, None)
        drawn = net.prior_switches(DRAWS, generator)
        switches = [
            type(m)(torch.cat([m.a, d.a]), torch.cat([m.t, d.t]))
            for m, d in zip(mode, drawn, strict=True)
        ]
        image, _ = net.top_down(top, switches)
        rows.append(_scaled(image))
    grid = _grid(np.concatenate(rows), k, DRAWS + 1)
    title = (
        "class renderings W^T e_c through switches: the priors' modes (first column), then "
        "draws from the EMA priors; rows: classes"
    )
    return _save(grid, title, path, DRAWS + 1, k)


@torch.no_grad()
def reconstructions(net: DRMMNetwork, x: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    dev = next(net.parameters()).device
    images = torch.as_tensor(x, dtype=torch.float32, device=dev)
    logits, switches = net.bottom_up(images)
    k = net.config.num_classes
    eye = torch.eye(k, device=dev)
    predicted, _ = net.top_down(net.top(eye[logits.argmax(-1)]), switches)
    truth = torch.as_tensor(labels, device=dev).clamp(0, k - 1)
    rendered_true, _ = net.top_down(net.top(eye[truth]), switches)
    shown = np.concatenate(
        [x, np.clip(predicted.float().cpu().numpy(), 0, 1), _scaled(rendered_true)]
    )
    n = len(x)
    grid = _grid(shown, 3, n)
    title = (
        "images; rendering of the predicted class through their switches (the reconstruction, "
        "clipped to [0, 1]); of the true class (scaled)\npredicted: "
        + " ".join(str(int(c)) for c in logits.argmax(-1).tolist())
        + "   true: "
        + " ".join(str(int(c)) for c in labels.tolist())
    )
    return _save(grid, title, path, n, 3)


def templates(net: DRMMNetwork, path: Path, limit: int = 64) -> Path:
    weight = net.convs[0].weight.detach()[:limit]
    cols = min(16, len(weight))
    rows = -(-len(weight) // cols)
    grid = _grid(_scaled(weight), rows, cols)
    return _save(grid, "first-layer templates (matched filters), each scaled", path, cols, rows)


def write_pictures(
    network: DRMMNetwork, dataset: Any, out_dir: str | Path, seed: int = 0
) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    factors = dataset.sample_factors(10, rng)
    x = dataset.observations(factors, rng)
    labels = factors[:, network.config.label_index]
    written = [reconstructions(network, x, labels, out / "reconstructions.png")]
    if network.config.ema_priors:
        written.append(renderings(network, out / "renderings.png", seed=seed))
    written.append(templates(network, out / "templates.png"))
    return written
