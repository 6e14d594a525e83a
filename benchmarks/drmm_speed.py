"""Training steps/s of the DRMM (``model.name = drmm``) and of the plain CNN of the same shape
(``drmm.objective: cnn``) beside the semi-supervised beta-VAE's (``s2vae``) at the same batch
size, measured in the same run.

All three see B unlabelled + B labelled images per step on 64x64 dSprites (the DRMM classifying
shape). The DRMM's step is two bottom-up passes (labelled and unlabelled batch), one top-down
rendering of the unlabelled batch and one backward; the CNN's is the labelled bottom-up pass and
its backward; the beta-VAE's encodes and decodes both batches. With ``--mnist`` the DRMM and CNN
are timed on mnist5k's 28x28 images too (no beta-VAE there: its networks take 64x64).

Every configuration is the project's eager training step (``Stepper.step_body``), timed in turn,
``--repeats`` rounds of ``--steps`` steps, best round kept (``train_throughput.time_steppers``).

    python benchmarks/drmm_speed.py [--steps 10] [--repeats 3] [--batch 64] [--device auto]
        [--mnist] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semidisent.config.schema import ModelParams, TrainParams
from semidisent.methods.base import RunSpec
from semidisent.methods.drmm.params import DRMMParams
from semidisent.training.runtime import device_name, resolve_device
from semidisent.training.trainer import build_run
from train_throughput import (
    QUICK_SIZES,
    mnist5k_prepared,
    step_time_figures,
    synthetic_dsprites,
    time_steppers,
)

BASE = "s2vae semi-supervised (64x64)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64, help="unlabelled and labelled batch size")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--mnist", action="store_true", help="also mnist5k's 28x28 images")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default; 1 on a shared machine, where "
                    "OpenMP threads stall behind other work)")  # fmt: skip
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    b = args.batch
    train = TrainParams(device=device.type, fast="off", amp="off", batch_size=b,
                        labelled_batch_size=b)  # fmt: skip
    sprites = synthetic_dsprites(QUICK_SIZES)
    drmm = ModelParams(name="drmm")
    configs: dict[str, tuple[object, ModelParams, object]] = {
        BASE: (sprites, ModelParams(), train),
        "drmm (64x64, 3 layers)": (sprites, drmm, RunSpec(train, DRMMParams())),
        "drmm cnn objective (64x64)": (sprites, drmm, RunSpec(train, DRMMParams(objective="cnn"))),
    }
    if args.mnist:
        digits = mnist5k_prepared()
        configs["drmm (28x28 mnist5k)"] = (digits, drmm, RunSpec(train, DRMMParams()))
        configs["drmm cnn objective (28x28 mnist5k)"] = (
            digits, drmm, RunSpec(train, DRMMParams(objective="cnn")))  # fmt: skip
    steppers = {
        name: build_run(data, [config], model).stepper
        for name, (data, model, config) in configs.items()
    }
    best = time_steppers(steppers, args.steps, args.repeats, device)
    print(f"device: {device_name(device)} | torch {torch.__version__} | "
          f"{torch.get_num_threads()} threads | eager, batch {b} + {b}, "
          f"best of {args.repeats} x {args.steps} steps")  # fmt: skip
    figures = step_time_figures(best, BASE)
    if args.json:
        args.json.write_text(json.dumps({"device": device_name(device), "batch": b,
                                         "configs": figures}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
