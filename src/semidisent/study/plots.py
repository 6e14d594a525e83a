"""The study's pictures (PNG, matplotlib's object API as in stages/pictures.py):

- ``metrics_<cell>.png``: one panel per metric, a box per arm with every model as a point;
- ``paired_<cell>.png``: one panel per metric, each comparison's per-pair differences, their
  mean and its bootstrap CI, against 0;
- ``mig_vs_rate.png``: MIG against the arm's replacement rate (marker: labelled_recon), one panel
  per cell;
- ``traversals_<cell>.png``: the latent traversals (stages/pictures.py) of each arm's median
  model by MIG (by the first metric without MIG), side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..stages.pictures import _figure
from .definition import Study
from .report import NAMES
from .runner import model_dir

COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return (n + cols - 1) // cols, cols


def _jitter(n: int, width: float = 0.12) -> np.ndarray:
    # Deterministic: the same pictures for the same results.
    return np.linspace(-width, width, n) if n > 1 else np.zeros(n)


def metric_boxes(study: Study, report: Mapping[str, Any], cell: str, path: Path) -> Path:
    metrics = list(study.definition.metrics)
    arms = list(study.definition.arms)
    rows_, cols = _grid(len(metrics))
    fig = _figure(3.6 * cols, 3.0 * rows_ + 0.4)
    done = [r for r in report["models"] if r["cell"] == cell and r["status"] == "completed"]
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows_, cols, i + 1)
        data = [[r[metric] for r in done if r["arm"] == a and r[metric] is not None] for a in arms]
        if any(data):
            ax.boxplot([v if v else [np.nan] for v in data], widths=0.5, showfliers=False)
        for j, values in enumerate(data):
            ax.scatter(
                1 + j + _jitter(len(values)),
                values,
                s=14,
                color=COLOURS[j % 7],
                zorder=3,
                alpha=0.85,
            )
        ax.set_xticks(range(1, len(arms) + 1))
        ax.set_xticklabels(arms, rotation=20, ha="right", fontsize=8)
        ax.set_title(NAMES.get(metric, metric), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{study.definition.name}: {cell}, every model (box: quartiles)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path


def paired_differences(study: Study, report: Mapping[str, Any], cell: str, path: Path) -> Path:
    metrics = list(study.definition.metrics)
    comps = study.comparisons()
    rows_, cols = _grid(len(metrics))
    fig = _figure(3.8 * cols, 3.0 * rows_ + 0.4)
    by = {(r["arm"], r["reference"], r["metric"]): r for r in report["paired"] if r["cell"] == cell}
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows_, cols, i + 1)
        ax.axhline(0.0, color="black", lw=0.8)
        for j, (a, ref) in enumerate(comps):
            r = by.get((a, ref, metric))
            if r is None:
                continue
            diffs = r.get("differences") or []
            ax.scatter(j + _jitter(len(diffs)), diffs, s=12, color="grey", alpha=0.7, zorder=2)
            if r["mean_diff"] is not None:
                colour = {"better": "#2a9d44", "worse": "#c44e52"}.get(r["verdict"], "#4c72b0")
                lo = r["ci_low"] if r["ci_low"] is not None else r["mean_diff"]
                hi = r["ci_high"] if r["ci_high"] is not None else r["mean_diff"]
                ax.errorbar(
                    [j + 0.25],
                    [r["mean_diff"]],
                    yerr=[[r["mean_diff"] - lo], [hi - r["mean_diff"]]],
                    fmt="o",
                    color=colour,
                    capsize=4,
                    zorder=3,
                )
        ax.set_xticks(range(len(comps)))
        ax.set_xticklabels([f"{a}\n- {b}" for a, b in comps], fontsize=7)
        ax.set_title(f"{NAMES.get(metric, metric)}: difference", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{cell}: per-pair differences (grey), mean and CI (green: better, red: worse)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    return path


def mig_vs_rate(study: Study, report: Mapping[str, Any], path: Path) -> Path:
    cells = [c.id for c in study.cells]
    rows_, cols = _grid(len(cells))
    fig = _figure(4.0 * cols, 3.2 * rows_ + 0.3)
    markers = {"replaced": "s", "all": "o"}
    for i, cell in enumerate(cells):
        ax = fig.add_subplot(rows_, cols, i + 1)
        done = [r for r in report["models"] if r["cell"] == cell and r["status"] == "completed"]
        for j, arm in enumerate(study.definition.arms):
            mine = [r for r in done if r["arm"] == arm and r["mig"] is not None]
            if not mine:
                continue
            recon = mine[0]["labelled_recon"]
            # Arms at the same rate (p = 0 with and without labelled reconstruction) side by side.
            x0 = mine[0]["replacement_rate"] + (0.02 if recon == "all" else -0.02)
            ys = [r["mig"] for r in mine]
            ax.scatter(
                x0 + _jitter(len(ys), 0.01),
                ys,
                marker=markers.get(recon, "o"),
                s=14,
                color=COLOURS[j % 7],
                alpha=0.6,
                label=f"{arm} ({recon})",
            )
            ax.errorbar(
                [x0], [float(np.mean(ys))], yerr=[[0], [0]], fmt="_", ms=18, color=COLOURS[j % 7]
            )
        ax.set_xlabel("replacement rate p")
        ax.set_ylabel("MIG")
        ax.set_title(cell, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("MIG against the replacement rate (bar: mean)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path


def median_model(rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The model at the median of ``metric`` (the lower middle one for an even count)."""
    scored = sorted(
        (r for r in rows if r[metric] is not None), key=lambda r: (r[metric], r["model_id"])
    )
    return scored[(len(scored) - 1) // 2] if scored else None


def median_traversals(
    study: Study, out: Path, report: Mapping[str, Any], cell: str, path: Path
) -> Path | None:
    from matplotlib.image import imread

    metric = "mig" if "mig" in study.definition.metrics else study.definition.metrics[0]
    done = [r for r in report["models"] if r["cell"] == cell and r["status"] == "completed"]
    panels = []
    for arm in study.definition.arms:
        m = median_model([r for r in done if r["arm"] == arm], metric)
        if m is None:
            continue
        picture = model_dir(out, study.model(m["model_id"])) / "plots" / "traversals.png"
        if picture.exists():
            panels.append((arm, m, imread(picture)))
    if not panels:
        return None
    fig = _figure(4.2 * len(panels), 5.2)
    for i, (arm, m, image) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(image)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"{arm}: median {NAMES.get(metric, metric)} {m[metric]:.3f}\n"
            f"(s{m['supervision_seed']}-t{m['training_seed']})",
            fontsize=9,
        )
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_all(study: Study, out: Path, report: Mapping[str, Any]) -> list[Path]:
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for old in plots.glob("*.png"):
        old.unlink()
    written = []
    for cell in (c.id for c in study.cells):
        written.append(metric_boxes(study, report, cell, plots / f"metrics_{cell}.png"))
        if study.definition.paired:
            written.append(paired_differences(study, report, cell, plots / f"paired_{cell}.png"))
        t = median_traversals(study, out, report, cell, plots / f"traversals_{cell}.png")
        if t is not None:
            written.append(t)
    if "mig" in study.definition.metrics:
        written.append(mig_vs_rate(study, report, plots / "mig_vs_rate.png"))
    return written
