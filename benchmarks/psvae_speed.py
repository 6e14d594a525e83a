"""Training steps/s of the partially-specified VAE (``model.name = ps_vae``) beside the
semi-supervised beta-VAE's (``s2vae``), at the same batch size, measured in the same run.

Every configuration is the project's eager training step (``Stepper.step_body``: the draw from
the device-resident data, the forward, one gradient, Adam), B unlabelled + B labelled images:

- ``s2vae``: the disentanglement_lib conv VAE on dSprites-shaped 64x64 data (synthetic, in memory);
- ``ps_vae`` with the dsprites specification on the same data (the same conv trunk and deconv
  decoder; Siddharth's objective decodes S = 8 samples per image, M2 one per shape class);
- ``ps_vae`` with the mnist specification on mnist5k (28x28, the notebook's 784-256 MLP),
  the configuration of the docs/psvae.md experiments.

The configurations are timed in turn, ``--repeats`` rounds of ``--steps`` steps each, best round
kept (the machine is shared: the best round is the least disturbed). The ratio column is each
configuration's steps/s over s2vae's.

    python benchmarks/psvae_speed.py [--steps 20] [--repeats 3] [--batch 64] [--device auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semidisent.artifacts.prepared import Prepared
from semidisent.config.schema import ModelParams, SupervisionParams, TrainParams
from semidisent.data.catalog import DSPRITES_FACTORS
from semidisent.data.registry import build_dataset
from semidisent.methods.base import RunSpec
from semidisent.methods.psvae.params import PSVAEParams
from semidisent.supervision.mask import build_mask
from semidisent.training.runtime import device_name, resolve_device
from semidisent.training.trainer import build_run
from train_throughput import QUICK_SIZES, synthetic_dsprites, time_steppers


def dsprites_like() -> Prepared:
    """train_throughput's synthetic dSprites grid with dSprites' factor names (the ps_vae
    specification reads its label columns by name)."""
    prepared = synthetic_dsprites(QUICK_SIZES)
    prepared.dataset.factor_names = DSPRITES_FACTORS
    mask = dataclasses.replace(prepared.mask, factor_names=DSPRITES_FACTORS)
    return dataclasses.replace(prepared, mask=mask)


def mnist5k() -> Prepared:
    dataset = build_dataset("mnist5k")
    mask = build_mask(dataset, SupervisionParams(n_labels=100))
    manifest = {"content_sha256": "mnist5k", "supervision": {"mask_sha256": mask.digest()}}
    return Prepared(path=Path("."), manifest=manifest, dataset=dataset, mask=mask)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    device = resolve_device(args.device)
    train = TrainParams(device=device.type, fast="off", amp="off", batch_size=args.batch, lr=1e-3)
    sprites, digits = dsprites_like(), mnist5k()
    configs = {
        "s2vae (dlib conv VAE, 64x64)": (sprites, ModelParams(), train),
        "ps_vae siddharth, dsprites spec (conv, S=8)": (
            sprites,
            ModelParams(name="ps_vae"),
            RunSpec(train, PSVAEParams()),
        ),
        "ps_vae m2, dsprites spec (conv, 3 classes)": (
            sprites,
            ModelParams(name="ps_vae"),
            RunSpec(train, PSVAEParams(objective="m2")),
        ),
        "ps_vae siddharth, mnist spec (mlp, 28x28, S=8)": (
            digits,
            ModelParams(name="ps_vae"),
            RunSpec(train, PSVAEParams()),
        ),
        "ps_vae m2, mnist spec (mlp, 28x28, 10 classes)": (
            digits,
            ModelParams(name="ps_vae"),
            RunSpec(train, PSVAEParams(objective="m2")),
        ),
    }
    steppers = {
        name: build_run(prepared, [config], model).stepper
        for name, (prepared, model, config) in configs.items()
    }

    best = time_steppers(steppers, args.steps, args.repeats, device)
    b = args.batch
    print(f"device: {device_name(device)} | torch {torch.__version__} | eager, batch {b} + {b}")
    base = best["s2vae (dlib conv VAE, 64x64)"]
    for name, s in best.items():
        print(f"  {name:48s} {1 / s:8.2f} steps/s  ({s * 1000:7.1f} ms/step)  "
              f"{base / s:5.2f}x s2vae")  # fmt: skip
    overhead(digits, device, args.steps, args.repeats)


def overhead(prepared: Prepared, device: torch.device, steps: int, repeats: int) -> None:
    """The per-step cost that does not scale with the batch: the mnist configuration at batch
    1 + 1 (framework dispatch of every operator; an eager GPU step pays it too, a CUDA-graph
    replay does not) and the operators one step runs (each at least one kernel on a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    tiny = TrainParams(device=device.type, fast="off", amp="off", batch_size=1, lr=1e-3)
    out = {}
    for objective in ("siddharth", "m2"):
        spec = RunSpec(tiny, PSVAEParams(objective=objective))
        stepper = build_run(prepared, [spec], ModelParams(name="ps_vae")).stepper
        stepper.step_body()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(steps):
                stepper.step_body()
            best = min(best, (time.perf_counter() - t0) / steps)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            stepper.step_body()
        ops = sum(
            1
            for e in prof.events()
            if e.name.startswith("aten::")
            and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
        )  # operators not called by another operator, backward's included
        out[objective] = (best, ops)
    for objective, (s, ops) in out.items():
        print(f"  ps_vae {objective:9s} mnist spec at batch 1 + 1: {s * 1000:6.2f} ms/step "
              f"(per-step overhead), {ops} top-level operators per step")  # fmt: skip


if __name__ == "__main__":
    main()
