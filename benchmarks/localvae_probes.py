"""Linear-probe accuracy of VAEs whose decoders differ only in what they can model locally
(factorised, local PixelCNN l = 1 and l = 3, full PixelCNN), at equal training budget, several
seeds; and M2 against M2 with a local decoder with 100 labels: the docs/localvae.md experiment
(Zhang, Xiao, Paige & Barber 2022's claims), through the real CLI (prepare, train, evaluate).

Seed s draws the labelled pool (supervision.seed = s; only M2 reads it) and the initial weights
and batches (train.seed = s); every arm of a seed sees the same pool, so differences are paired
by seed. Every label of the pool trains (supervision.validation_fraction = 0). Probes and test
errors are on mnist5k's held-out fifth of each class (1,000 images); the probes are fitted on the
4,000 other images' encoder means. The ``random`` arm evaluates the untrained local network (the
floor of what probes read from random features of the image).

    python benchmarks/localvae_probes.py --out outputs/localvae-mnist5k --jobs 2

Prints (and writes to <out>/summary.json) per arm the mean +- sd over seeds, and the paired
differences (local - factorised, local - full, local M2 - M2) with a 95% t interval.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_runs import ROOT, run, t_interval

VAE_ARMS = {
    "factorised": ["local_vae.decoder=factorised"],
    "local_l1": ["local_vae.decoder=local", "local_vae.local_size=1"],
    "local_l3": ["local_vae.decoder=local", "local_vae.local_size=3"],
    "full": ["local_vae.decoder=full"],
}
# The untrained local-decoder network (train.seed's initial weights): what the probes read from
# random features of the image, the floor a trained encoder should clear.
RANDOM_ARMS = {"random": VAE_ARMS["local_l1"]}
M2_ARMS = {
    "m2": ["local_vae.objective=m2", "local_vae.decoder=factorised"],
    "m2_local_l1": ["local_vae.objective=m2", "local_vae.decoder=local", "local_vae.local_size=1"],
}
# Rough relative cost per step, so the longest jobs start first and the workers end together.
COST = {
    "random": 0.1,
    "factorised": 1,
    "local_l1": 1.5,
    "local_l3": 1.5,
    "full": 2,
    "m2": 1.5,
    "m2_local_l1": 6,
}
PAIRS = [("local_l1", "factorised"), ("local_l3", "factorised"), ("local_l1", "full"),
         ("local_l3", "full"), ("full", "factorised"), ("factorised", "random"),
         ("local_l1", "random")]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--path", default=None, help="data.path (full MNIST / SVHN / CIFAR-10 files)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=[*VAE_ARMS, *RANDOM_ARMS, *M2_ARMS])
    ap.add_argument("--steps", type=int, default=1000, help="training steps of the VAE arms")
    ap.add_argument("--m2-steps", type=int, default=300, help="training steps of the M2 arms")
    ap.add_argument("--batch", type=int, default=64, help="VAE batch (M2: half + half labelled)")
    ap.add_argument("--m2-batch", type=int, default=16)
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--channels", type=int, default=32, help="local_vae.pixel_channels")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("-S", "--set", action="append", default=[], help="another params override")
    ap.add_argument("--summarise-only", action="store_true",
                    help="train nothing: summarise the models evaluated under --out")  # fmt: skip
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = [
        "--params", str(ROOT / "params.yaml"), "-q",
        "-S", f"data.dataset={args.dataset}",
        *(["-S", f"data.path={args.path}"] if args.path else []),
        "-S", f"supervision.n_labels={args.labels}",
        "-S", "supervision.validation_fraction=0",
        "-S", "model.name=local_vae",
        "-S", "model.num_latent=32",
        "-S", f"local_vae.pixel_channels={args.channels}",
        "-S", "local_vae.hidden=256",
        "-S", "tracking.enabled=false",
        "-S", f"train.lr={args.lr}",
        "-S", f"train.device={args.device}",
        "-S", "train.log_every=100",
        "-S", f"eval.device={args.device}",
        "-S", "eval.plots=false",
        *(x for kv in args.set for x in ("-S", kv)),
    ]  # fmt: skip
    log = out / "log.txt"
    for seed in args.seeds:
        prep = out / f"prepared-seed{seed}"
        if not (prep / "manifest.json").exists():
            run(["prepare", *common, "-S", f"supervision.seed={seed}", "--out", str(prep)], log)

    def one(arm: str, seed: int) -> dict:
        d = out / f"{arm}-seed{seed}"
        done = d / "eval" / "metrics.json"
        m2 = arm in M2_ARMS
        steps = args.m2_steps if m2 else args.steps
        own = ["-S", f"supervision.seed={seed}", "-S", f"train.seed={seed}",
               "-S", f"train.steps={steps}", "-S", f"train.checkpoint_every={steps}"]  # fmt: skip
        if m2:
            own += ["-S", f"train.batch_size={args.m2_batch}",
                    "-S", f"train.labelled_batch_size={args.m2_batch}"]  # fmt: skip
        else:
            own += ["-S", f"train.batch_size={args.batch}", "-S", "train.labelled_batch_size=1"]
        own += [x for kv in (M2_ARMS | VAE_ARMS | RANDOM_ARMS)[arm] for x in ("-S", kv)]
        prep = str(out / f"prepared-seed{seed}")
        if arm in RANDOM_ARMS and not done.exists():
            run(["evaluate", *common, *own, "--prepared", prep, "--random-encoder",
                 "--out", str(d / "eval")], log)  # fmt: skip
        elif not done.exists():
            t0 = time.perf_counter()
            run(["train", *common, *own, "--prepared", prep, "--out", str(d)], log)
            run(["evaluate", *common, *own, "--prepared", prep, "--model", str(d / "model.pt"),
                 "--out", str(d / "eval")], log)  # fmt: skip
            (d / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
        metrics = json.loads(done.read_text())
        row: dict = {"arm": arm, "seed": seed, "steps": 0 if arm in RANDOM_ARMS else steps}
        if arm not in RANDOM_ARMS:
            stats = json.loads((d / "train_stats.json").read_text())
            row["steps_per_s"] = stats["steps_per_s"]
            row["train_bits_per_dim"] = stats["final_losses"]["bits_per_dim"]
        if m2:
            row["error"] = metrics["classification"]["error"]
            row["error_inferred"] = metrics["classification"]["error_inferred"]
        else:
            p = metrics["probes"]
            row.update(linear=p["linear_accuracy"], mlp=p["mlp_accuracy"],
                       bits_per_dim=p["bits_per_dim"], pca_dims_90=p["pca_dims_90"],
                       pca_top=p["pca_explained"][0],
                       posterior_entropy=p["posterior_entropy"])  # fmt: skip
        return row

    t0 = time.perf_counter()

    def cost(job: tuple[str, int]) -> float:
        return COST.get(job[0], 1) * (args.m2_steps if job[0] in M2_ARMS else args.steps)

    jobs = sorted(((a, s) for s in args.seeds for a in args.arms), key=cost, reverse=True)
    if args.summarise_only:
        jobs = [
            (a, s) for a, s in jobs if (out / f"{a}-seed{s}" / "eval" / "metrics.json").exists()
        ]
        args.seeds = [s for s in args.seeds if all((a, s) in jobs for a in args.arms)]
        jobs = [(a, s) for a, s in jobs if s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda j: one(*j), jobs))
    summary: dict = {"dataset": args.dataset, "args": {k: str(v) for k, v in vars(args).items()},
                     "models": rows, "wall_s": time.perf_counter() - t0}  # fmt: skip
    print(
        f"{args.dataset}, seeds {args.seeds}; VAE {args.steps} steps x {args.batch}, M2 "
        f"{args.m2_steps} steps x ({args.m2_batch} + {args.m2_batch}), {args.labels} labels"
    )
    arms: dict = {}
    for arm in args.arms:
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["seed"])
        keys = ("error", "error_inferred") if arm in M2_ARMS else (
            "linear", "mlp", "bits_per_dim", "pca_dims_90", "posterior_entropy")  # fmt: skip
        entry = {}
        for key in (*keys, *(("steps_per_s",) if arm not in RANDOM_ARMS else ())):
            v = [r[key] for r in mine]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            entry[key] = {"mean": statistics.fmean(v), "sd": sd, "values": v}
        arms[arm] = entry
        shown = "  ".join(f"{k} {entry[k]['mean']:.4f} +- {entry[k]['sd']:.4f}" for k in keys)
        speed = f"  ({entry['steps_per_s']['mean']:.2f} steps/s)" if "steps_per_s" in entry else ""
        print(f"  {arm:12s} {shown}{speed}")
    summary["arms"] = arms
    diffs = {}
    by = {(r["arm"], r["seed"]): r for r in rows}
    pairs = [p for p in PAIRS if p[0] in args.arms and p[1] in args.arms]
    for a, b in pairs:
        for key in ("linear", "mlp"):
            v = [by[(a, s)][key] - by[(b, s)][key] for s in args.seeds]
            diffs[f"{key}: {a} - {b}"] = t_interval(v)
    if "m2" in args.arms and "m2_local_l1" in args.arms:
        for key in ("error", "error_inferred"):
            v = [by[("m2_local_l1", s)][key] - by[("m2", s)][key] for s in args.seeds]
            diffs[f"{key}: m2_local_l1 - m2"] = t_interval(v)
    for name, d in diffs.items():
        print(
            f"  {name:36s} {d['mean']:+.4f} (95% t interval {d['ci95'][0]:+.4f} .. "
            f"{d['ci95'][1]:+.4f}; per seed {', '.join(f'{x:+.4f}' for x in d['values'])})"
        )
    summary["paired_differences"] = diffs
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
