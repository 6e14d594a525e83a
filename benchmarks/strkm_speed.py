"""Training steps/s of St-RKM (``model.name = st_rkm``, each variant) beside the semi-supervised
beta-VAE's (``s2vae``) at the same batch size, measured in the same run: the paper's claim that
St-RKM "increases only marginally the computing time compared to an analogous VAE".

The analogous VAE is ``s2vae`` unsupervised (gamma_sup = 0, no replacement, one labelled image
per step) on the same networks: St-RKM's default ``dlib`` networks are the
disentanglement_lib conv encoder / decoder with a 50-dimensional feature layer in place of the
VAE's 2 x 10 Gaussian heads (and 50 decoder inputs in place of 10). St-RKM's step adds the PCA
term (an (n x 50)(50 x 10) product) and Cayley ADAM on U (50 x 10, float64); the split variant
also decodes every image twice. The authors' capacity-64 ``paper`` networks are timed too (no
VAE of that size exists in the project: their ratio is to s2vae's smaller networks).

Every configuration is the project's eager training step (``Stepper.step_body``: draw, forward,
one gradient, the optimisers), timed in turn, ``--repeats`` rounds of ``--steps`` steps, best
round kept (the machine is shared: the best round is the least disturbed).

    python benchmarks/strkm_speed.py [--steps 20] [--repeats 3] [--batch 64] [--device auto]
        [--no-paper] [--threads 1] [--json out.json]
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
from semidisent.methods.strkm.params import StRKMParams
from semidisent.training.runtime import device_name, resolve_device
from semidisent.training.trainer import build_run
from train_throughput import QUICK_SIZES, step_time_figures, synthetic_dsprites, time_steppers

BASE = "s2vae unsupervised (64 + 1 labelled)"
SEMI = "s2vae semi-supervised (64 + 64 labelled)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--no-paper", action="store_true", help="skip the authors' larger networks")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default; 1 on a shared machine, where "
                    "OpenMP threads stall behind other work)")  # fmt: skip
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    # St-RKM reads the unlabelled batch only. The analogous VAE: s2vae without supervised term
    # or replacement and one labelled image per step (the family always encodes a labelled
    # batch); beside it the semi-supervised s2vae as it trains by default.
    train = TrainParams(device=device.type, fast="off", amp="off", batch_size=args.batch,
                        gamma_sup=0.0, replacement_rate=0.0, labelled_batch_size=1)  # fmt: skip
    semi = TrainParams(device=device.type, fast="off", amp="off", batch_size=args.batch)
    sprites = synthetic_dsprites(QUICK_SIZES)
    rkm = ModelParams(name="st_rkm")
    configs: dict[str, tuple[ModelParams, object]] = {
        BASE: (ModelParams(), train),
        SEMI: (ModelParams(), semi),
    }
    for variant in ("deterministic", "noisy_u", "split"):
        configs[f"st_rkm {variant} (dlib networks)"] = (
            rkm, RunSpec(train, StRKMParams(variant=variant)))  # fmt: skip
    if not args.no_paper:
        configs["st_rkm split (paper networks, capacity 64)"] = (
            rkm, RunSpec(train, StRKMParams(network="paper")))  # fmt: skip
    steppers = {
        name: build_run(sprites, [config], model).stepper
        for name, (model, config) in configs.items()
    }

    best = time_steppers(steppers, args.steps, args.repeats, device)
    b = args.batch
    print(f"device: {device_name(device)} | torch {torch.__version__} | "
          f"{torch.get_num_threads()} threads | eager, batch {b} (64x64), "
          f"best of {args.repeats} x {args.steps} steps")  # fmt: skip
    figures = step_time_figures(best, BASE)
    if args.json:
        args.json.write_text(json.dumps({"device": device_name(device), "batch": b,
                                         "configs": figures}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
