"""Speed and agreement of the disentanglement metrics: reference mode (disentanglement_lib's
scikit-learn estimators) against fast mode (batched torch / numpy), per metric, in one run.

Part 1 (timing, dSprites images from a prepared artifact, study sample sizes): for a synthetic
representation computed from the images (image moments: rendering / unpacking is part of the
metric time) and, with --model, a trained VAE, every metric in reference mode on the CPU and in
fast mode on each device (cpu, and cuda when present): seconds, ratio, and the largest absolute
difference between the two modes' scores. Fast mode runs the metrics as `semidisent evaluate`
does (one shared code cache), so the first metric pays for encoding most rows. On the CPU it
runs them twice: as `evaluate_metrics` does for a single-threaded representation such as the
moments, DCI in a forked process alongside the others ("concurrent", the evaluation's wall
time), and one after the other (the baseline, whose per-metric seconds the table shows:
concurrent ones overlap); the scores of the two must agree. (A trained VAE's encoder keeps
torch's threads: with --model both runs of it are one after the other.)

Part 2 (--known-codes, agreement): a dSprites-sized factor grid whose observations carry their
factors, with a perfectly disentangled, a mixed and a random code, and, with --model, the trained
encoder's codes of every dSprites row (looked up by row, so the reference mode's estimators, not
its encoder calls, set the pace): reference vs fast, largest absolute difference per score.

Part 3 (always, unless --skip-dci-agreement): DCI fast vs reference on entangled codes of the
same grid (a near-perfect code through random 10 x 10 mixings, --dci-codes seeds), every score's
difference, at --dci-scale times the study sizes (default 0.1: reference DCI at study size takes
~3 minutes per code on a 2-core CPU; pass 1.0 for the study sizes).

    python benchmarks/metrics_speed.py --prepared data/prepared [--model models/default/model.pt]
        [--scale 1.0] [--known-codes] [--skip-reference] [--dci-scale 0.1] [--json results.json]

Timings on a shared machine vary (see the speed index printed with them: seconds of a fixed
numpy workload, lower is faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semidisent.metrics import testing
from semidisent.metrics.registry import compute_metric, evaluate_metrics, metric_settings
from semidisent.metrics.representation import CodeCache, vae_representation
from semidisent.metrics.utils import limit_threads, resolve_device, resolve_workers

CORE = ("beta_vae", "factor_vae", "mig", "dci", "sap", "modularity")


def speed_index() -> float:
    """Seconds of a fixed single-threaded numpy workload (best of 5): how fast this machine
    is right now."""
    a = np.random.default_rng(0).random((300, 300))
    best = np.inf
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(10):
            a @ a
        np.sort(np.random.default_rng(1).random(300_000))
        best = min(best, time.perf_counter() - t)
    return best


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU"


def flat(scores: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in scores.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        elif k.startswith("num_"):
            continue
        else:
            out[prefix + k] = float(v)
    return out


def max_diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, str]:
    fa, fb = flat(a), flat(b)
    diffs = {k: abs(fa[k] - fb[k]) for k in fa if k in fb}
    if not diffs:
        return 0.0, ""
    key = max(diffs, key=lambda k: diffs[k])
    return diffs[key], key


def load_dataset(prepared: str | None):
    from semidisent.artifacts.prepared import load_prepared

    if prepared and Path(prepared, "manifest.json").exists():
        return load_prepared(prepared, verify=False).dataset
    from semidisent.config import load_params
    from semidisent.stages.prepare import run_prepare

    out = Path(tempfile.mkdtemp(prefix="metrics_speed_")) / "prepared"
    print(f"no prepared artifact at {prepared!r}: preparing procedural dSprites in {out} ...")
    return run_prepare(load_params(None), out, progress=False).dataset


class Timed:
    """A representation function that adds up the seconds spent inside it."""

    def __init__(self, fn):
        self.fn = fn
        self.accepts_uint8 = getattr(fn, "accepts_uint8", False)
        self.seconds = 0.0

    def __call__(self, x):
        t = time.perf_counter()
        try:
            return self.fn(x)
        finally:
            self.seconds += time.perf_counter() - t


def reference_run(
    names, dataset, fn, seed: int, scale: float, threads: int, workers: int
) -> tuple[dict, dict]:
    scores, seconds = {}, {}
    for name in names:
        settings = metric_settings(
            name, "reference", "cpu", scale, threads=threads, workers=workers
        )
        t = time.perf_counter()
        scores[name] = compute_metric(name, dataset, fn, seed, settings)
        seconds[name] = time.perf_counter() - t
        print(f"    reference {name:12s} {seconds[name]:8.2f} s", flush=True)
    return scores, seconds


def timing_section(args, dataset, reps: dict[str, Any], devices: list[str]) -> dict:
    results: dict[str, Any] = {}
    for rep_name, make in reps.items():
        print(
            f"\n== {rep_name} representation on {dataset.name} ({dataset.num_rows} images), "
            f"sample scale {args.scale} =="
        )
        entry: dict[str, Any] = {"fast": {}}
        for device in devices:
            # The concurrent run first: were the images' file not yet in the page cache, it
            # would pay for reading it, not the baseline.
            runs = {"concurrent": True, "one after another": False}
            if not device.startswith("cpu"):
                runs = {"one after another": False}  # nothing runs alongside on a GPU
            timed = {}
            for run, concurrent in runs.items():
                rep = Timed(make(device))
                t = time.perf_counter()
                ev = evaluate_metrics(
                    args.metrics,
                    dataset,
                    rep,
                    args.seed,
                    "fast",
                    args.scale,
                    device,
                    threads=args.threads,
                    workers=args.workers,
                    concurrent=concurrent,
                )
                total = time.perf_counter() - t
                timed[run] = {
                    "scores": ev.scores,
                    "seconds": ev.seconds,
                    "total": total,
                    "concurrent_metrics": ev.concurrent,
                    "rows_encoded": ev.rows_encoded,
                    "representation_seconds": rep.seconds,
                    "device_name": device_name(device),
                }
                alongside = f", {'+'.join(ev.concurrent)} alongside" if ev.concurrent else ""
                print(
                    f"    fast on {device} ({device_name(device)}), {run}{alongside}: "
                    f"{total:.2f} s, {ev.rows_encoded} rows encoded; {rep.seconds:.2f} s of it "
                    f"inside the representation function, {total - rep.seconds:.2f} s metrics",
                    flush=True,
                )
            apart = entry["fast"][device] = timed["one after another"]
            if "concurrent" in timed:
                together = apart["concurrent"] = timed["concurrent"]
                diff, key, metric = max(
                    (
                        (*max_diff(together["scores"][m], scores), m)
                        for m, scores in apart["scores"].items()
                    ),
                    key=lambda x: x[0],
                )
                base = apart["total"]
                if not together["concurrent_metrics"]:
                    print("    (nothing ran alongside: a multi-threaded representation function)")
                print(
                    f"    concurrent / one after another: {together['total']:.2f} s / "
                    f"{base:.2f} s = {together['total'] / base:.2f}x the time; scores differ "
                    f"by at most {diff:.2g}" + (f" ({metric} {key})" if diff else "")
                )
        if not args.skip_reference and (
            args.reference_reps is None or rep_name in args.reference_reps
        ):
            scores, seconds = reference_run(
                args.metrics,
                dataset,
                make("cpu"),
                args.seed,
                args.scale,
                args.threads,
                args.workers,
            )
            entry["reference"] = {"scores": scores, "seconds": seconds}
        results[rep_name] = entry
        print_table(entry, devices)
    return results


def print_table(entry: dict, devices: list[str]) -> None:
    ref = entry.get("reference")
    head = f"    {'metric':12s} {'reference s':>12s}"
    for dev in devices:
        head += f" {'fast ' + dev + ' s':>12s} {'ratio':>7s}"
    print(head + f"  {'max |fast - ref|':>17s} (score)")
    names = list(entry["fast"][devices[0]]["seconds"])
    for name in names:
        line = f"    {name:12s} "
        r = ref["seconds"][name] if ref else float("nan")
        line += f"{r:12.2f}"
        for dev in devices:
            f = entry["fast"][dev]["seconds"][name]
            line += f" {f:12.2f} {r / f if ref else float('nan'):7.1f}"
        if ref:
            d, key = max_diff(ref["scores"][name], entry["fast"][devices[0]]["scores"][name])
            line += f"  {d:17.4f} ({key})"
        print(line)
    core = [n for n in names if n in CORE]
    line = f"    {'core total':12s} "
    r = sum(ref["seconds"][n] for n in core) if ref else float("nan")
    line += f"{r:12.2f}"
    for dev in devices:
        f = sum(entry["fast"][dev]["seconds"][n] for n in core)
        line += f" {f:12.2f} {r / f if ref else float('nan'):7.1f}"
    print(line)
    together = {d: entry["fast"][d].get("concurrent") for d in devices}
    ran = any(t and t["concurrent_metrics"] for t in together.values())
    if ran and set(core) == set(names):
        # The wall time of the whole evaluation as `semidisent evaluate` runs it.
        line = f"    {'concurrent':12s} {r:12.2f}"
        for dev in devices:
            f = together[dev]["total"] if together[dev] else float("nan")
            line += f" {f:12.2f} {r / f if ref else float('nan'):7.1f}"
        print(line)


def known_codes_section(args, model_table: np.ndarray | None) -> dict:
    sizes = (3, 6, 40, 32, 32)
    ds = testing.factor_image_dataset(sizes)
    codes = {
        "perfect": testing.perfect_code(sizes),
        "mixed": testing.mixed_code(sizes, 0.5, noise_dims=5, noise_scale=0.1),
        "random": testing.random_code(sizes, dim=10),
    }
    if model_table is not None:
        codes["trained model"] = testing.PrecomputedCode(sizes, model_table)
    out: dict[str, Any] = {}
    print(
        f"\n== agreement on known codes (dSprites-sized factor grid, scale {args.known_scale}) =="
    )
    for name, code in codes.items():
        fast = evaluate_metrics(
            args.metrics,
            ds,
            code,
            args.seed,
            "fast",
            args.known_scale,
            "cpu",
            threads=args.threads,
            workers=args.workers,
        )
        ref, ref_s = reference_run(
            args.metrics, ds, code, args.seed, args.known_scale, args.threads, args.workers
        )
        diffs = {m: max_diff(ref[m], fast.scores[m]) for m in args.metrics}
        out[name] = {
            "reference": ref,
            "fast": fast.scores,
            "max_abs_diff": diffs,
            "seconds": {"reference": ref_s, "fast": fast.seconds},
        }
        print(f"  {name}:")
        for m in args.metrics:
            d, key = diffs[m]
            r = flat(ref[m])
            print(
                f"    {m:12s} max |fast - ref| {d:.4f} ({key}); reference "
                + ", ".join(f"{k} {v:.3f}" for k, v in list(r.items())[:4])
            )
    return out


def dci_agreement_section(args) -> dict:
    """DCI fast vs reference on linear mixtures of a near-perfect code (dSprites-sized grid)."""
    sizes = (3, 6, 40, 32, 32)
    ds = testing.factor_image_dataset(sizes)
    print(
        f"\n== DCI agreement on entangled codes (dSprites-sized factor grid, near-perfect code "
        f"through a random 10 x 10 mixing, scale {args.dci_scale}) =="
    )
    out: dict[str, Any] = {}
    for seed in args.dci_codes:
        code = testing.MixtureCode(sizes, seed=seed)
        scores, seconds = {}, {}
        for mode in ("fast", "reference"):
            settings = metric_settings(
                "dci", mode, "cpu", args.dci_scale, threads=args.threads, workers=args.workers
            )
            t = time.perf_counter()
            scores[mode] = compute_metric("dci", ds, code, args.seed, settings)
            seconds[mode] = time.perf_counter() - t
        diff = {k: scores["fast"][k] - scores["reference"][k] for k in scores["reference"]}
        out[f"mixture seed {seed}"] = {
            "scores": scores,
            "seconds": seconds,
            "fast - reference": diff,
        }
        print(
            f"  mixture seed {seed}: fast {seconds['fast']:.1f} s, reference "
            f"{seconds['reference']:.1f} s; fast - reference: "
            + ", ".join(f"{k} {v:+.4f}" for k, v in diff.items())
            + f" (max |.| {max(abs(v) for v in diff.values()):.4f})"
        )
    return out


def model_codes_table(dataset, rep, batch: int = 8192) -> np.ndarray:
    """The representation's codes of every row of the dataset (for the agreement section)."""
    cache = CodeCache(dataset, rep, batch_size=batch, progress=True)
    return cache.codes_of_rows(np.arange(dataset.num_rows), "table")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prepared", default="data/prepared", help="prepared dSprites artifact")
    p.add_argument("--model", default=None, help="a trained model file (semidisent.model/1)")
    p.add_argument("--scale", type=float, default=1.0, help="sample scale of the timing part")
    p.add_argument("--metrics", nargs="+", default=list(CORE))
    p.add_argument("--devices", default=None, help="comma list; default cpu (+ cuda if present)")
    p.add_argument("--threads", type=int, default=1, help="estimator threads (0: all)")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="estimator problems fitted in parallel (eval.cpu_workers; 0: one per core)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument(
        "--reference-reps",
        nargs="+",
        default=None,
        help="time reference mode only for these representations (e.g. moments: a trained "
        "VAE on CPU encodes ~3 million images in reference mode)",
    )
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--known-codes", action="store_true", help="also the agreement part")
    p.add_argument("--known-scale", type=float, default=1.0)
    p.add_argument(
        "--dci-scale",
        type=float,
        default=0.1,
        help="sample scale of the DCI agreement part (1.0: study sizes, ~3 min per code)",
    )
    p.add_argument(
        "--dci-codes",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="mixing seeds of the entangled codes of the DCI agreement part",
    )
    p.add_argument("--skip-dci-agreement", action="store_true")
    p.add_argument("--json", default=None, help="write all results here")
    args = p.parse_args(argv)
    devices = (
        args.devices.split(",")
        if args.devices
        else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    )
    devices = [resolve_device(d) for d in devices]
    import sklearn

    print(
        f"semidisent metrics benchmark: python {platform.python_version()}, torch "
        f"{torch.__version__}, scikit-learn {sklearn.__version__}, numpy {np.__version__}"
    )
    print(
        f"devices: {', '.join(f'{d} = {device_name(d)}' for d in devices)}; estimator "
        f"threads {args.threads}, workers {resolve_workers(args.workers)}; machine cores "
        f"{torch.get_num_threads()}"
    )
    idx = speed_index()
    print(f"speed index before: {idx:.3f} s")
    results: dict[str, Any] = {"speed_index_before": idx, "args": vars(args)}
    dataset = load_dataset(args.prepared)
    reps: dict[str, Any] = {"moments": lambda device: testing.MomentsCode()}
    model = None
    if args.model:
        from semidisent.models.io import load_model

        model, _ = load_model(args.model)
        reps["trained model"] = lambda device: vae_representation(model, device=device)
    if not args.skip_timing:
        results["timing"] = timing_section(args, dataset, reps, devices)
    if args.known_codes:
        table = None
        if model is not None:
            with limit_threads(0):
                table = model_codes_table(dataset, vae_representation(model, devices[-1]))
        results["known_codes"] = known_codes_section(args, table)
    if not args.skip_dci_agreement:
        results["dci_agreement"] = dci_agreement_section(args)
    results["speed_index_after"] = speed_index()
    print(f"\nspeed index after: {results['speed_index_after']:.3f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
