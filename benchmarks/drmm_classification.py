"""Semi-supervised classification error of the DRMM (the authors' follow-up objective: labelled
cross-entropy + reconstruction through the inferred switches + entropy + non-negativity) against
the plain CNN of the same shape trained on the labels alone (``drmm.objective: cnn``), same
labelled pools, same seeds: the docs/drmm.md experiment, through the real CLI (prepare, train,
evaluate per model).

Seed s draws the labelled pool (supervision.seed = s) and the initial weights and batches
(train.seed = s); both arms of a seed see the same pool and start from the same weights (a paired
comparison). Every label of the pool trains (supervision.validation_fraction = 0: "100 labels"
are 100 training labels). Test error on the dataset's test split (mnist5k and digits: the
held-out fifth of each class; MNIST: the 10,000 test images). Nothing is tuned on test error:
the hyper-parameters are the reference code's defaults (params.yaml ``drmm``), fixed before the
run.

    python benchmarks/drmm_classification.py --out outputs/drmm-mnist5k                  # mnist5k
    python benchmarks/drmm_classification.py --dataset digits --channels 32 64 \\
        --kernels 3 3 --out outputs/drmm-digits                                          # 8x8
    python benchmarks/drmm_classification.py --dataset mnist --path ~/data/mnist \\
        --steps 30000 --out outputs/drmm-mnist                                           # MNIST

Prints (and writes to <out>/summary.json) per arm the mean +- sd of the test error over seeds,
the training steps/s, and the paired differences (drmm - cnn, and the ablations': ``--arms drmm
cnn no_recon entropy_only``) with their 95% t intervals and the project's bootstrap / Wilcoxon
summary (``semidisent.study.statistics.paired``; a verdict needs
>= 6 pairs). ``--jobs 2`` trains two models side by side, one thread each.
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

# The arms: drmm.* overrides. The ablations keep the DRMM's objective but drop terms: without
# the reconstruction (entropy minimisation + non-negativity: is it the rendering that helps?) and
# with the entropy term alone.
ARMS = {
    "drmm": {"objective": "drmm"},
    "cnn": {"objective": "cnn"},
    "no_recon": {"objective": "drmm", "rc_weight": 0.0},
    "entropy_only": {"objective": "drmm", "rc_weight": 0.0, "nn_weight": 0.0},
}
# Paired comparisons reported (arm, reference), when both arms ran.
PAIRS = [("drmm", "cnn"), ("no_recon", "cnn"), ("entropy_only", "cnn"), ("drmm", "no_recon"),
         ("no_recon", "entropy_only")]  # fmt: skip
# Relative cost of a step (the DRMM's two bottom-up passes and one top-down): longest first.
COST = {"drmm": 3.0, "no_recon": 3.0, "entropy_only": 3.0, "cnn": 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--path", default=None, help="data.path (full MNIST files)")
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--arms", nargs="+", default=["drmm", "cnn"], choices=list(ARMS))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=100, help="unlabelled and labelled batch size")
    ap.add_argument("--lr", type=float, default=1e-3, help="the reference's initial Adam lr")
    ap.add_argument("--channels", type=int, nargs="+", default=None)
    ap.add_argument("--kernels", type=int, nargs="+", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("-S", "--set", action="append", default=[], help="another params override")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    network = []
    if args.channels:
        network += ["-S", f"drmm.channels=[{','.join(map(str, args.channels))}]"]
    if args.kernels:
        network += ["-S", f"drmm.kernel_sizes=[{','.join(map(str, args.kernels))}]"]
    common = [
        "--params", str(ROOT / "params.yaml"), "-q",
        "-S", f"data.dataset={args.dataset}",
        *(["-S", f"data.path={args.path}"] if args.path else []),
        "-S", f"supervision.n_labels={args.labels}",
        "-S", "supervision.validation_fraction=0",
        "-S", "model.name=drmm",
        "-S", "tracking.enabled=false",
        "-S", f"train.steps={args.steps}",
        "-S", f"train.batch_size={args.batch}",
        "-S", f"train.labelled_batch_size={args.batch}",
        "-S", f"train.lr={args.lr}",
        "-S", f"train.device={args.device}",
        "-S", f"train.checkpoint_every={max(args.steps // 4, 1)}",
        "-S", f"train.log_every={max(args.steps // 20, 1)}",
        "-S", f"eval.device={args.device}",
        *network,
        *(x for kv in args.set for x in ("-S", kv)),
    ]  # fmt: skip
    log = out / "log.txt"
    for seed in args.seeds:  # one labelled pool per seed, shared by the arms
        prep = out / f"prepared-seed{seed}"
        if not (prep / "manifest.json").exists():
            run(["prepare", *common, "-S", f"supervision.seed={seed}", "--out", str(prep)], log)

    def one(arm: str, seed: int) -> dict:
        d = out / f"{arm}-seed{seed}"
        done = d / "eval" / "metrics.json"
        if not done.exists():
            own = ["-S", f"supervision.seed={seed}", "-S", f"train.seed={seed}",
                   *(x for k, v in ARMS[arm].items() for x in ("-S", f"drmm.{k}={v}"))]  # fmt: skip
            prep = str(out / f"prepared-seed{seed}")
            run(["train", *common, *own, "--prepared", prep, "--out", str(d)], log)
            plots = "true" if seed == args.seeds[0] else "false"
            run(["evaluate", *common, *own, "-S", f"eval.plots={plots}", "--prepared", prep,
                 "--model", str(d / "model.pt"), "--out", str(d / "eval")], log)  # fmt: skip
        metrics = json.loads(done.read_text())
        stats = json.loads((d / "train_stats.json").read_text())
        return {
            "arm": arm,
            "seed": seed,
            "error": metrics["classification"]["error"],
            "steps_per_s": stats["steps_per_s"],
            "final_losses": stats["final_losses"],
        }

    t0 = time.perf_counter()
    jobs = sorted(((a, s) for s in args.seeds for a in args.arms),
                  key=lambda j: COST.get(j[0], 1.0), reverse=True)  # fmt: skip
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda j: one(*j), jobs))
    summary: dict = {
        "dataset": args.dataset,
        "args": {k: str(v) for k, v in vars(args).items()},
        "command": " ".join(["python", "benchmarks/drmm_classification.py", *sys.argv[1:]]),
        "models": rows,
        "wall_s": time.perf_counter() - t0,
    }
    print(f"{args.dataset}, {args.labels} labels, {args.steps} steps x ({args.batch} + "
          f"{args.batch}), seeds {args.seeds}")  # fmt: skip
    by = {(r["arm"], r["seed"]): r for r in rows}
    arms = {}
    for arm in args.arms:
        entry = {}
        for key in ("error", "steps_per_s"):
            v = [by[(arm, s)][key] for s in args.seeds]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            entry[key] = {"mean": statistics.fmean(v), "sd": sd, "values": v}
        arms[arm] = entry
        e, s = entry["error"], entry["steps_per_s"]
        print(f"  {arm:6s} test error {100 * e['mean']:.2f} +- {100 * e['sd']:.2f} %  "
              f"(per seed {', '.join(f'{100 * x:.1f}' for x in e['values'])})  "
              f"{s['mean']:.1f} steps/s")  # fmt: skip
    summary["arms"] = arms
    from semidisent.study.statistics import paired

    summary["paired_differences"] = {}
    for a, b in (p for p in PAIRS if p[0] in args.arms and p[1] in args.arms):
        d = t_interval([by[(a, s)]["error"] - by[(b, s)]["error"] for s in args.seeds])
        # paired() counts "wins" as the arm scoring higher: errors, so the reference is the arm.
        p = paired({s: by[(b, s)]["error"] for s in args.seeds},
                   {s: by[(a, s)]["error"] for s in args.seeds})  # fmt: skip
        d["better_in"] = p.wins
        d["bootstrap"] = p.as_dict()
        summary["paired_differences"][f"{a} - {b}"] = d
        print(f"  {a} - {b} test error {100 * d['mean']:+.2f} points (95% t interval "
              f"{100 * d['ci95'][0]:+.2f} .. {100 * d['ci95'][1]:+.2f}; {a} better in "
              f"{p.wins}/{p.n} seeds; bootstrap verdict on {b} - {a}: {p.verdict}"
              f"{'; ' + p.note if p.note else ''})")  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
