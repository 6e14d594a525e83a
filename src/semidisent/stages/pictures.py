"""Pictures of a model for `semidisent evaluate`: reconstructions, prior samples, latent
traversals and factor-vs-latent heat maps, as PNG files (DVC plots and MLflow show them as
images). Matplotlib is used through its object API (no pyplot state, no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _grid(images: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    """(rows * cols, C, H, W) in [0, 1] -> one (H', W', C) picture with white gutters."""
    n, c, h, w = images.shape
    out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.float32)
    for i in range(min(n, rows * cols)):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y : y + h, x : x + w] = images[i].transpose(1, 2, 0)
    return out


def _show(ax, picture: np.ndarray) -> None:
    if picture.shape[2] == 1:
        ax.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(picture, 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _decode(model: Any, z: np.ndarray) -> np.ndarray:
    import torch

    dev = next(model.parameters()).device
    with torch.inference_mode():
        logits = model.decode(torch.as_tensor(z, dtype=torch.float32, device=dev))
        return torch.sigmoid(logits).float().cpu().numpy()


def _encode(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    dev = next(model.parameters()).device
    with torch.inference_mode():
        mean, log_var = model.encode(torch.as_tensor(x, device=dev))
        return mean.float().cpu().numpy(), log_var.float().cpu().numpy()


def reconstructions(model: Any, x: np.ndarray, path: Path) -> Path:
    """Top row: observations; bottom row: sigmoid(decoder(encoder mean))."""
    mean, _ = _encode(model, x)
    recon = _decode(model, mean)
    n = len(x)
    fig = _figure(1.1 * n, 2.6)
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, _grid(np.concatenate([x, recon]), 2, n))
    ax.set_title("observations (top) and reconstructions from the encoder mean (bottom)")
    fig.tight_layout()
    fig.savefig(path)
    return path


def samples(model: Any, path: Path, n: int = 64, seed: int = 0) -> Path:
    """Decoder means of z ~ N(0, I)."""
    z = np.random.default_rng(seed).standard_normal((n, model.num_latent))
    side = int(np.ceil(np.sqrt(n)))
    fig = _figure(8, 8.4)
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, _grid(_decode(model, z), side, side))
    ax.set_title("samples: decoder(z), z ~ N(0, I)")
    fig.tight_layout()
    fig.savefig(path)
    return path


def traversals(
    model: Any,
    x: np.ndarray,
    path: Path,
    steps: int = 9,
    limit: float = 2.0,
    labels: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """One row per latent: the code of ``x[0]`` (the encoder mean) with that latent swept over
    [-limit, limit]. Rows are labelled ``labels``, by default with the latent's mean KL over ``x``
    (nats), so that collapsed latents (KL ~ 0) are visible."""
    mean, log_var = _encode(model, x)
    d = model.num_latent
    if labels is None:
        kl = 0.5 * (mean**2 + np.exp(log_var) - log_var - 1).mean(axis=0)
        labels = [f"z{i} KL {kl[i]:.2f}" for i in range(d)]
    values = np.linspace(-limit, limit, steps)
    z = np.repeat(mean[:1], d * steps, axis=0).reshape(d, steps, d)
    for i in range(d):
        z[i, :, i] = values
    images = _decode(model, z.reshape(d * steps, d))
    fig = _figure(1.0 * steps + 1.2, 1.0 * d + 0.8)
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, _grid(images, d, steps))
    h = images.shape[2] + 2
    ax.set_yticks([2 + h * i + h / 2 for i in range(d)])
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_title(title or f"latent traversals, z_i from {-limit:g} to {limit:g}")
    fig.tight_layout()
    fig.savefig(path)
    return path


def heatmap(
    matrix: np.ndarray, factor_names: tuple[str, ...], title: str, path: Path, fmt: str = ".2f"
) -> Path:
    """(latents x factors) matrix with its values written in the cells."""
    d, f = matrix.shape
    fig = _figure(1.2 + 0.9 * f, 1.0 + 0.45 * d)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix, cmap="viridis", aspect="auto", vmin=0)
    ax.set_xticks(range(f))
    ax.set_xticklabels(factor_names, rotation=30, ha="right")
    ax.set_yticks(range(d))
    ax.set_yticklabels([f"z{i}" for i in range(d)])
    top = float(np.nanmax(matrix)) if matrix.size else 0.0
    for i in range(d):
        for j in range(f):
            v = matrix[i, j]
            ax.text(
                j,
                i,
                format(v, fmt),
                ha="center",
                va="center",
                fontsize=7,
                color="black" if v > 0.6 * top else "white",
            )
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_pictures(
    model: Any,
    dataset: Any,
    out_dir: str | Path,
    details: dict[str, dict[str, Any]],
    seed: int = 0,
) -> list[Path]:
    """All pictures into ``out_dir``; heat maps from the metrics' details (MIG's mutual
    information, normalised by factor entropy; DCI's importance matrix) when computed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    factors = dataset.sample_factors(64, rng)
    x = dataset.observations(factors, rng)
    written = [
        reconstructions(model, x[:8], out / "reconstructions.png"),
        samples(model, out / "samples.png", seed=seed),
        traversals(model, x, out / "traversals.png"),
    ]
    written += factor_heatmaps(details, tuple(dataset.factor_names), out)
    return written


def factor_heatmaps(
    details: dict[str, dict[str, Any]], names: tuple[str, ...], out: Path
) -> list[Path]:
    """The heat maps of the metrics that ran: MIG's mutual information normalised by factor
    entropy, DCI's importance matrix (none when neither ran)."""
    written = []
    mig = details.get("mig", {})
    if "mutual_information" in mig:
        h = np.maximum(mig["factor_entropy"], 1e-12)
        written.append(
            heatmap(
                mig["mutual_information"] / h[None, :],
                names,
                "mutual information / factor entropy (MIG)",
                out / "mutual_information.png",
            )
        )
    dci = details.get("dci", {})
    if "importance_matrix" in dci:
        written.append(
            heatmap(
                dci["importance_matrix"],
                names,
                "DCI importance (boosted trees)",
                out / "dci_importance.png",
            )
        )
    return written
