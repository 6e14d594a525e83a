"""Semi-supervised classification error of the partially-specified VAE (Siddharth et al.'s
objective) against Kingma et al.'s M2, same networks, same labelled pools, several seeds: the
docs/psvae.md experiment, through the real CLI (prepare, train, evaluate per model).

Seed s draws the labelled pool (supervision.seed = s) and the initial weights and batches
(train.seed = s); both objectives of a seed see the same pool (a paired comparison). Every
label of the pool trains (supervision.validation_fraction = 0, the published protocol: "100
labels" are 100 training labels). Test error on the dataset's test split (mnist5k: the held-out
fifth of each class, 1,000 images; MNIST: the 10,000 test images).

    python benchmarks/psvae_classification.py --out outputs/psvae_mnist5k            # mnist5k
    python benchmarks/psvae_classification.py --dataset mnist --path ~/data/mnist \\
        --steps 100000 --out outputs/psvae_mnist                                      # full MNIST

Prints (and writes to <out>/summary.json) the mean +- sample standard deviation over seeds of
the encoder's error and the importance-weighted inference's, per objective, with the training
steps/s measured. ``--jobs 2`` trains two models side by side, one thread each.
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
from cli_runs import ROOT, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--path", default=None, help="data.path (full MNIST / SVHN files)")
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--objectives", nargs="+", default=["siddharth", "m2"])
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--lr", type=float, default=1e-3, help="the reference notebook's Adam lr")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("-S", "--set", action="append", default=[], help="another params override")
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
        "-S", "model.name=ps_vae",
        "-S", "tracking.enabled=false",
        "-S", f"train.steps={args.steps}",
        "-S", f"train.lr={args.lr}",
        "-S", f"train.device={args.device}",
        "-S", f"train.checkpoint_every={max(args.steps // 4, 1)}",
        "-S", "train.log_every=500",
        "-S", f"eval.device={args.device}",
        *(x for kv in args.set for x in ("-S", kv)),
    ]  # fmt: skip
    log = out / "log.txt"
    for seed in args.seeds:  # one labelled pool per seed, shared by the objectives
        prep = out / f"prepared-seed{seed}"
        if not (prep / "manifest.json").exists():
            run(["prepare", *common, "-S", f"supervision.seed={seed}", "--out", str(prep)], log)

    def one(objective: str, seed: int) -> dict:
        d = out / f"{objective}-seed{seed}"
        done = d / "eval" / "metrics.json"
        if not done.exists():
            own = ["-S", f"supervision.seed={seed}", "-S", f"train.seed={seed}",
                   "-S", f"ps_vae.objective={objective}"]  # fmt: skip
            prep = str(out / f"prepared-seed{seed}")
            run(["train", *common, *own, "--prepared", prep, "--out", str(d)], log)
            run(["evaluate", *common, *own, "-S", "eval.plots=false", "--prepared", prep,
                 "--model", str(d / "model.pt"), "--out", str(d / "eval")], log)  # fmt: skip
        metrics = json.loads(done.read_text())
        stats = json.loads((d / "train_stats.json").read_text())
        return {
            "objective": objective,
            "seed": seed,
            "error": metrics["classification"]["error"],
            "error_inferred": metrics["classification"]["error_inferred"],
            "steps_per_s": stats["steps_per_s"],
        }

    t0 = time.perf_counter()
    jobs = [(o, s) for s in args.seeds for o in args.objectives]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda j: one(*j), jobs))
    summary: dict = {
        "dataset": args.dataset,
        "overrides": args.set,
        "labels": args.labels,
        "steps": args.steps,
        "seeds": args.seeds,
        "models": rows,
        "wall_s": time.perf_counter() - t0,
    }
    print(f"{args.dataset}, {args.labels} labels, {args.steps} steps, seeds {args.seeds}")
    for objective in args.objectives:
        mine = [r for r in rows if r["objective"] == objective]
        entry = {}
        for key in ("error", "error_inferred", "steps_per_s"):
            values = [r[key] for r in mine if r[key] is not None]
            mean = statistics.fmean(values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            entry[key] = {"mean": mean, "std": sd, "values": values}
        summary[objective] = entry
        e, i, s = entry["error"], entry["error_inferred"], entry["steps_per_s"]
        print(f"  {objective:10s} test error {100 * e['mean']:.2f} +- {100 * e['std']:.2f} %  "
              f"(inferred {100 * i['mean']:.2f} +- {100 * i['std']:.2f} %)  "
              f"{s['mean']:.1f} steps/s")  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
