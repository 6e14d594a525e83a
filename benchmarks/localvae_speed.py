"""Training steps/s of the local-decoder VAE (``model.name = local_vae``: factorised, local l = 1,
3, 5 and full PixelCNN decoders, and the local-decoder M2) beside the semi-supervised beta-VAE's
(``s2vae``) at the same batch size, measured in the same run; and the time of batched
autoregressive sampling (the pictures' cost).

- 64x64 (synthetic dSprites-shaped data): ``local_vae`` on the project's conv encoder / decoder
  (the s2vae's networks, the decoder ending in h(z) with 16 channels), so the ratio is the cost of
  the pixel decoder and its likelihood;
- 28x28 (the offline MNIST subset, ``--mnist``): the configuration of benchmarks/localvae_probes.py
  (mlp networks); the s2vae has no 28x28 networks, so the ratio there is against the 64x64 s2vae.

Every configuration is the project's eager training step (``Stepper.step_body``), timed in turn,
``--repeats`` rounds of ``--steps`` steps, best round kept (the machine is shared).

    python benchmarks/localvae_speed.py [--steps 10] [--repeats 3] [--batch 64] [--channels 32]
        [--device auto] [--mnist] [--sample 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semidisent.config.schema import ModelParams, TrainParams
from semidisent.methods.base import RunSpec
from semidisent.methods.localvae.params import LocalVAEParams
from semidisent.training.runtime import device_name, resolve_device
from semidisent.training.trainer import build_run
from train_throughput import (
    QUICK_SIZES,
    mnist5k_prepared,
    step_time_figures,
    sync_device,
    synthetic_dsprites,
    time_steppers,
)

BASE = "s2vae unsupervised (64x64, 1 labelled)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--channels", type=int, default=32, help="local_vae.pixel_channels")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--mnist", action="store_true", help="also the 28x28 mnist5k configurations")
    ap.add_argument("--sample", type=int, default=16, help="images per timed sampling call")
    ap.add_argument(
        "--decoders", nargs="+", default=None, help="a subset, e.g. factorised 'local l=1'"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    device = resolve_device(args.device)
    b = args.batch
    train = TrainParams(device=device.type, fast="off", amp="off", batch_size=b,
                        gamma_sup=0.0, replacement_rate=0.0, labelled_batch_size=1)  # fmt: skip
    sprites = synthetic_dsprites(QUICK_SIZES)
    local = ModelParams(name="local_vae", num_latent=10)
    own = {"pixel_channels": args.channels, "feature_channels": 16}
    decoders = {
        "factorised": LocalVAEParams(decoder="factorised", **own),
        "local l=1": LocalVAEParams(decoder="local", local_size=1, **own),
        "local l=3": LocalVAEParams(decoder="local", local_size=3, **own),
        "local l=5": LocalVAEParams(decoder="local", local_size=5, **own),
        "full PixelCNN": LocalVAEParams(decoder="full", **own),
    }
    if args.decoders:
        decoders = {k: v for k, v in decoders.items() if k in args.decoders}
    configs: dict[str, tuple[object, ModelParams, object]] = {BASE: (sprites, ModelParams(), train)}
    for name, p in decoders.items():
        configs[f"local_vae {name} (64x64 conv)"] = (sprites, local, RunSpec(train, p))
    if args.mnist:
        digits = mnist5k_prepared()
        m = ModelParams(name="local_vae", num_latent=32)
        for name, p in decoders.items():
            configs[f"local_vae {name} (28x28 mlp)"] = (digits, m, RunSpec(train, p))
        semi = TrainParams(device=device.type, fast="off", amp="off", batch_size=b // 2,
                           labelled_batch_size=b // 2)  # fmt: skip
        for name in [n for n in ("factorised", "local l=1") if n in decoders]:
            p = dataclasses.replace(decoders[name], objective="m2")
            configs[f"local_vae M2 {name} ({b // 2}+{b // 2}, 28x28)"] = (
                digits, m, RunSpec(semi, p))  # fmt: skip
    runs = {name: build_run(data, [cfg], model) for name, (data, model, cfg) in configs.items()}
    steppers = {name: run.stepper for name, run in runs.items()}

    best = time_steppers(steppers, args.steps, args.repeats, device)
    print(f"device: {device_name(device)} | torch {torch.__version__} | "
          f"{torch.get_num_threads()} threads | eager, batch {b}, PixelCNN {args.channels} "
          f"channels, best of {args.repeats} x {args.steps} steps")  # fmt: skip
    figures = step_time_figures(best, BASE)
    # Batched autoregressive sampling: one image per feature map, pixel by pixel.
    sampling = {}
    for name, run in runs.items():
        if name == BASE or "M2" in name:
            continue
        net = run.stepper.method.export(run.stepper.model.modules()[0]).to(device)
        z = torch.randn(args.sample, net.num_latent, device=device)
        sync_device(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            net.pixel.sample(net.features(z), torch.Generator().manual_seed(0))
        sync_device(device)
        sampling[name] = time.perf_counter() - t0
        print(f"  sampling {args.sample} images, {name:40s} {sampling[name]:7.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"device": device_name(device), "batch": b,
                                         "configs": figures, "sampling_s": sampling,
                                         "sample_images": args.sample}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
