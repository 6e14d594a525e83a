"""The shallow rendering mixture model trained by closed-form hard EM on translated 8x8 digits
(``methods/drmm/rmm.py``), over several labelled draws: the checkable core of the DRMM's theory.

Each of scikit-learn's 1,797 digits is pasted at a random offset of a 12x12 canvas (the
translation nuisance t; 25 offsets of an 8x8 template); seed s draws 10 labelled digits per
class, the rest are unlabelled. Three fits per seed:

- ``labelled``: the templates after the labelled-only phase (class means of the labelled digits,
  aligned by hard EM over their offsets): a nearest-template classifier from 100 labels;
- ``semi``: then hard EM on every image, labelled classes clamped, priors floored at 1e-3;
- ``naive``: hard EM with no labels at all, from 10 unlabelled digits as templates (k-means
  style): the start a public third-party shallow RM reports collapsing. Its clusters are matched
  to classes by majority label (an upper bound on what it could be credited with).

Accuracy is on the unlabelled images (transductive: EM sees them), the largest class share of
the unlabelled assignments shows a collapse. Writes <out>/summary.json and <out>/templates.png
(per class: labelled-only and semi-supervised templates, seed 0).

    python benchmarks/rmm_hard_em.py --out outputs/rmm [--seeds 0 1 2 3 4 5 6 7 8 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from semidisent.methods.drmm import rmm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_runs import t_interval


def labelled_mask(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.RandomState(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        mask[rng.choice(np.nonzero(labels == c)[0], per_class, replace=False)] = True
    return mask


def naive_fit(images: np.ndarray, labels: np.ndarray, seed: int, iterations: int) -> np.ndarray:
    """Hard EM from 10 random images as templates, no label: predicted clusters (N,)."""
    rng = np.random.RandomState(1000 + seed)
    h = w = 8
    start = rmm.crops(images[rng.choice(len(images), 10, replace=False)], (h, w))
    # The crop at the canvas centre of each chosen image: offset (2, 2) of the 25.
    centre = start[:, len(rmm.offsets(images.shape[1:], (h, w))) // 2]
    model = rmm.RMM(
        templates=centre,
        sigma2=float(images.var()),
        pi_c=np.full(10, 0.1),
        pi_t=np.full(25, 1 / 25),
        pi_a=np.full((10, 2), 0.5),
        canvas_shape=images.shape[1:],
    )
    nothing = np.zeros(len(images), dtype=bool)
    _, latents, _, _ = rmm.run_hard_em(model, images, labels, nothing, iterations)
    return latents.classes


def majority_accuracy(clusters: np.ndarray, labels: np.ndarray) -> float:
    right = 0
    for k in np.unique(clusters):
        right += np.bincount(labels[clusters == k]).max()
    return right / len(labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--canvas", type=int, default=12)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, _ = rmm.translated_digits(digits.images / 16.0, canvas=args.canvas, seed=0)
    labels = digits.target
    rows = []
    t0 = time.perf_counter()
    first = None
    for seed in args.seeds:
        mask = labelled_mask(labels, args.per_class, seed)
        fit = rmm.fit_hard_em(images, labels, mask, 10, (8, 8), iterations=args.iterations)
        unl = ~mask
        initial = rmm.classify(fit.initial, images[unl])
        final = fit.latents.classes[unl]
        counts = np.bincount(final, minlength=10)
        naive = naive_fit(images, labels, seed, args.iterations)
        naive_counts = np.bincount(naive, minlength=10)
        rows.append({
            "seed": seed,
            "labelled_only": float((initial == labels[unl]).mean()),
            "semi": float((final == labels[unl]).mean()),
            "semi_iterations": fit.iterations,
            "semi_converged": fit.converged,
            "semi_largest_share": float(counts.max() / counts.sum()),
            "semi_smallest_share": float(counts.min() / counts.sum()),
            "naive_majority_accuracy": float(majority_accuracy(naive[unl], labels[unl])),
            "naive_largest_share": float(naive_counts.max() / naive_counts.sum()),
            "naive_empty_clusters": int((naive_counts == 0).sum()),
        })  # fmt: skip
        first = first or fit
        r = rows[-1]
        print(f"  seed {seed}: labelled-only {r['labelled_only']:.3f}, semi-supervised "
              f"{r['semi']:.3f} ({r['semi_iterations']} iterations, class shares "
              f"{r['semi_smallest_share']:.3f}-{r['semi_largest_share']:.3f}); naive "
              f"{r['naive_majority_accuracy']:.3f} (largest share {r['naive_largest_share']:.3f}, "
              f"{r['naive_empty_clusters']} empty)", flush=True)  # fmt: skip
    diff = t_interval([r["semi"] - r["labelled_only"] for r in rows])
    summary = {
        "command": " ".join(["python", "benchmarks/rmm_hard_em.py", *sys.argv[1:]]),
        "rows": rows,
        "semi_minus_labelled_only": diff,
        "wall_s": time.perf_counter() - t0,
    }
    for key in ("labelled_only", "semi", "naive_majority_accuracy", "naive_largest_share"):
        v = [r[key] for r in rows]
        summary[key] = {"mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0}
        print(f"{key:24s} {summary[key]['mean']:.3f} +- {summary[key]['sd']:.3f}")
    print(f"semi - labelled-only: {diff['mean']:+.3f} (95% t interval {diff['ci95'][0]:+.3f} .. "
          f"{diff['ci95'][1]:+.3f}; {len(rows)} seeds)")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    if first is not None:
        _picture(first, args.out / "templates.png")


def _picture(fit: rmm.HardEMResult, path: Path) -> None:
    from semidisent.stages.pictures import _figure, _grid, _show

    def scaled(t: np.ndarray) -> np.ndarray:
        lo = t.min(axis=(1, 2), keepdims=True)
        hi = t.max(axis=(1, 2), keepdims=True)
        return ((t - lo) / np.maximum(hi - lo, 1e-12))[:, None]

    shown = np.concatenate([scaled(fit.initial.templates), scaled(fit.model.templates)])
    fig = _figure(10.5, 2.8)
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, _grid(shown.astype(np.float32), 2, 10))
    ax.set_title("RMM templates per class: labelled-only (top), after semi-supervised hard EM")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
