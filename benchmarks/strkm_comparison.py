"""St-RKM (each variant) against the beta-VAE on dSprites at equal training wall time: MIG, DCI
disentanglement and the generation scores (docs/strkm.md), paired over the same seeds, through
the real CLI (prepare once, then train and evaluate per model).

Equal wall time: each arm's steps/s is measured first, in this run, on one thread (the way the
models then train, two processes side by side on a 2-core machine); each model then trains for
``--budget-s`` seconds' worth of its own steps. The beta-VAE is ``s2vae`` with gamma_sup = 0 and
no replacement and a labelled batch of one image (the unsupervised beta-VAE, beta = 4 as
params.yaml; St-RKM is unsupervised).
Every model: train.seed s, train.lr 1e-4 (the project's default; the St-RKM authors use 2e-4),
batch 64, 10 latents; evaluated with eval.seed 0 at ``--sample-scale`` of the study sizes, the
generation scores against the same cached factor classifier.

Paired differences arm - beta-VAE over the seeds: mean, 95% t interval (df = seeds - 1) and
wins; with fewer than 6 seeds the project's verdict rule (study/statistics.py) says
inconclusive whatever the interval.

    python benchmarks/strkm_comparison.py --out results/strkm-cpu [--seeds 0 1 2]
        [--budget-s 100] [--sample-scale 0.5] [--workers 2] [--prepared DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "semidisent"
ARMS = {
    # Unsupervised: no supervised term, no replacement, and one labelled image per step (the
    # family always encodes a labelled batch: 64 of them would cost it ~1/3 of its step rate).
    "beta_vae": [
        "model.name=s2vae",
        "train.gamma_sup=0.0",
        "train.replacement_rate=0.0",
        "train.labelled_batch_size=1",
    ],
    "st_rkm_deterministic": ["model.name=st_rkm", "st_rkm.variant=deterministic"],
    "st_rkm_noisy_u": ["model.name=st_rkm", "st_rkm.variant=noisy_u"],
    "st_rkm_split": ["model.name=st_rkm", "st_rkm.variant=split"],
}
METRICS = {  # name, path in metrics.json, higher is better
    "mig": (("summary", "mig"), True),
    "dci": (("summary", "dci"), True),
    "swd": (("generation", "swd"), False),
    "frechet": (("generation", "frechet"), False),
}


def cli(*args: str, env: dict | None = None) -> None:
    proc = subprocess.run([str(BIN), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"semidisent {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def step_rates(prepared: Path, common: list[str], steps: int = 15) -> dict[str, float]:
    """Each arm's training steps/s on one thread (best of two rounds, after two warm-up steps)."""
    import torch

    from semidisent.artifacts.prepared import load_prepared
    from semidisent.config import load_params
    from semidisent.methods import get_method
    from semidisent.methods.base import RunSpec
    from semidisent.training.trainer import build_run

    torch.set_num_threads(1)
    rates = {}
    for arm, overrides in ARMS.items():
        params = load_params(ROOT / "params.yaml", [*common, *overrides])
        method = get_method(params.model.name)
        section = getattr(params, method.params_section) if method.params_section else None
        stepper = build_run(load_prepared(prepared, params), [RunSpec(params.train, section)],
                            params.model).stepper  # fmt: skip
        for _ in range(2):
            stepper.step_body()
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            for _ in range(steps):
                stepper.step_body()
            best = min(best, (time.perf_counter() - t0) / steps)
        rates[arm] = 1.0 / best
        print(f"  {arm:22s} {rates[arm]:6.2f} steps/s (one thread)", flush=True)
    return rates


def t_interval(d: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget-s", type=float, default=100.0)
    ap.add_argument("--sample-scale", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prepared", type=Path, default=None)
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = ["tracking.enabled=false", "train.log_every=50", "train.checkpoint_every=100000",
              f"eval.sample_scale={args.sample_scale}", "eval.metrics=[mig,dci]",
              "eval.few_label=false", "eval.random_baseline=[]", "eval.generation=always",
              "eval.cpu_workers=1", "train.device=cpu", "eval.device=cpu"]  # fmt: skip
    sets = [a for o in common for a in ("-S", o)]
    prepared = args.prepared or out / "prepared"
    if not (prepared / "manifest.json").exists():
        print(f"preparing {prepared}", flush=True)
        cli("prepare", "--params", str(ROOT / "params.yaml"), "-q", *sets, "--out", str(prepared))
    t_start = time.perf_counter()
    print("step rates:", flush=True)
    rates = step_rates(prepared, common)
    steps = {arm: max(1, round(args.budget_s * r)) for arm, r in rates.items()}
    # The factor classifier once, before the parallel evaluations.
    from semidisent.artifacts.prepared import load_prepared
    from semidisent.config import load_params
    from semidisent.metrics.generation import GenerationSettings, load_or_train_classifier

    params = load_params(ROOT / "params.yaml", common)
    p = load_prepared(prepared, params)
    settings = GenerationSettings(classifier_steps=params.eval.generation_classifier_steps)
    _, classifier = load_or_train_classifier(p.dataset, p.data_hash, settings, progress=False)
    print(f"factor classifier: accuracy {classifier['accuracy']}", flush=True)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def one(job: tuple[str, int]) -> dict:
        arm, seed = job
        d = out / f"{arm}-seed{seed}"
        over = [*sets, *[a for o in ARMS[arm] for a in ("-S", o)],
                "-S", f"train.seed={seed}", "-S", f"train.steps={steps[arm]}"]  # fmt: skip
        t0 = time.perf_counter()
        if not (d / "model" / "model.pt").exists():
            cli("train", "--params", str(ROOT / "params.yaml"), "-q", *over, "--prepared",
                str(prepared), "--out", str(d / "model"), env=env)  # fmt: skip
        t1 = time.perf_counter()
        if not (d / "eval" / "metrics.json").exists():
            cli("evaluate", "--params", str(ROOT / "params.yaml"), "-q", *over, "--prepared",
                str(prepared), "--model", str(d / "model" / "model.pt"), "--out",
                str(d / "eval"), env=env)  # fmt: skip
        metrics = json.loads((d / "eval" / "metrics.json").read_text())
        train_stats = json.loads((d / "model" / "train_stats.json").read_text()) if (
            d / "model" / "train_stats.json").exists() else {}  # fmt: skip
        row = {"arm": arm, "seed": seed, "steps": steps[arm],
               "train_s": train_stats.get("train_s"), "wall_train_s": round(t1 - t0, 1),
               "wall_eval_s": round(time.perf_counter() - t1, 1)}  # fmt: skip
        for name, (path, _) in METRICS.items():
            v = metrics
            for k in path:
                v = v[k]
            row[name] = v
        row["swd_real"] = metrics["generation"]["swd_real"]
        row["frechet_real"] = metrics["generation"]["frechet_real"]
        print(f"  {arm:22s} seed {seed}: " + ", ".join(
            f"{k} {row[k]:.4g}" for k in METRICS) + f" ({row['wall_train_s']} s + "
            f"{row['wall_eval_s']} s)", flush=True)  # fmt: skip
        return row

    jobs = [(arm, s) for s in args.seeds for arm in ARMS]
    with ThreadPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one, jobs))
    report = summarise(rows, args, rates, steps, classifier, time.perf_counter() - t_start)
    (out / "results.json").write_text(json.dumps({"rows": rows, **report}, indent=2) + "\n")
    print(report["markdown"])
    (out / "report.md").write_text(report["markdown"])


def summarise(rows, args, rates, steps, classifier, seconds) -> dict:
    from semidisent.study.statistics import min_pairs

    by = {(r["arm"], r["seed"]): r for r in rows}
    seeds = args.seeds
    lines = [
        f"St-RKM vs beta-VAE on dSprites at equal training wall time ({args.budget_s:g} s per "
        f"model, one thread each), {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
        f"evaluated at sample_scale {args.sample_scale:g}; "
        f"{platform.processor() or platform.machine()}; "
        f"{seconds / 60:.1f} min in all.",
        "",
        "| arm | steps/s | steps | MIG | DCI | SWD (real-real) | Frechet (real-real) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in ARMS:
        vals = {
            m: np.array([by[(arm, s)][m] for s in seeds])
            for m in [*METRICS, "swd_real", "frechet_real"]
        }

        def ms(m: str, f: str = ".3f", vals: dict = vals) -> str:
            v = vals[m]
            return f"{v.mean():{f}} ± {v.std(ddof=1):{f}}" if len(v) > 1 else f"{v[0]:{f}}"

        lines.append(
            f"| {arm} | {rates[arm]:.2f} | {steps[arm]} | {ms('mig')} | {ms('dci')} | "
            f"{ms('swd', '.4f')} ({vals['swd_real'].mean():.4f}) | {ms('frechet', '.1f')} "
            f"({vals['frechet_real'].mean():.1f}) |"
        )
    lines += ["", "Paired differences arm - beta_vae (mean, 95% t interval, arm better in k of n "
              "seeds; lower is better for SWD and Frechet):", "",
              "| arm | MIG | DCI | SWD | Frechet |", "|---|---|---|---|---|"]  # fmt: skip
    paired = {}
    for arm in list(ARMS)[1:]:
        cells = []
        for m, (_, higher) in METRICS.items():
            d = np.array([by[(arm, s)][m] - by[("beta_vae", s)][m] for s in seeds])
            lo, hi = t_interval(d) if len(d) > 1 else (float("nan"), float("nan"))
            better = int(((d > 0) if higher else (d < 0)).sum())
            paired[f"{arm}/{m}"] = {"mean": float(d.mean()), "t95": [lo, hi], "better": better,
                                    "n": len(d), "diffs": d.tolist()}  # fmt: skip
            cells.append(f"{d.mean():+.3g} [{lo:+.3g}, {hi:+.3g}] {better}/{len(d)}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", f"With {len(seeds)} seeds (< {min_pairs()}) no difference gets a verdict "
              "under the project's rule; the intervals are the t intervals of the paired "
              "differences.", "",
              f"Factor classifier (Frechet features): held-out accuracy {classifier['accuracy']}, "
              f"sha256 {classifier['sha256'][:16]}.", "",
              "Command: `python benchmarks/strkm_comparison.py --out <dir> --seeds "
              f"{' '.join(map(str, seeds))} --budget-s {args.budget_s:g} --sample-scale "
              f"{args.sample_scale:g} --workers {args.workers}`", ""]  # fmt: skip
    return {"rates": rates, "steps": steps, "paired": paired, "markdown": "\n".join(lines)}


if __name__ == "__main__":
    main()
