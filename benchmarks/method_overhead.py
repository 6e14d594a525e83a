"""What the method interface costs the semi-supervised beta-VAE's step: the Stepper's step (the
family's forward with a hyper-parameter dict, parameter groups with their optimisers, the hooks)
against the same step written out as the code before the interface ran it (draw, gamma schedule,
the objective, one gradient, one Adam update over every parameter), timed alternately in one run.
Both compute the same numbers bit for bit (tests/test_methods.py); the ratio is the overhead.

    python benchmarks/method_overhead.py [--steps 30] [--repeats 3] [--device auto]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semidisent.config.schema import ModelParams, TrainParams
from semidisent.objectives.schedule import SCHEDULE_CODES, gamma_at
from semidisent.training.optim import adam_step
from semidisent.training.runtime import device_name, resolve_device
from semidisent.training.trainer import build_run
from train_throughput import QUICK_SIZES, synthetic_dsprites


def plain_step(module, data, keys, state, t: TrainParams, step: int) -> None:
    """One step as the Stepper ran it before the method interface (its bookkeeping included:
    the statistics accumulator, the non-finite record, the step counter)."""
    params, m, v, count, lr, active, acc, bad = state
    s = torch.tensor(step, device=keys.device)
    batch = data.draw(keys, s)
    gamma = gamma_at(
        s,
        torch.tensor([t.gamma_sup], device=keys.device),
        torch.tensor([SCHEDULE_CODES[t.gamma_schedule]], device=keys.device),
        torch.tensor([t.gamma_threshold], device=keys.device),
    )[0]
    beta = torch.tensor(t.beta, device=keys.device)
    rate = torch.tensor(t.replacement_rate, device=keys.device)
    loss, stats = module.objective(
        batch.x_u[0], batch.x_l, batch.y_l, batch.obs_l, batch.eps_u[0], batch.eps_l[0],
        batch.u_rep[0], {"beta": beta}, gamma, rate,
    )  # fmt: skip
    losses, stats = loss[None], stats[None]
    grads = torch.autograd.grad(losses.sum(), params, allow_unused=True)
    adam_step(params, list(grads), m, v, count, lr, active, False)
    with torch.no_grad():
        acc.add_(torch.where(active[:, None], stats, 0.0))
        newly_bad = ~torch.isfinite(losses) & active & (bad < 0)
        bad.copy_(torch.where(newly_bad, s, bad))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    device = resolve_device(args.device)
    prepared = synthetic_dsprites(QUICK_SIZES)
    t = TrainParams(device=device.type, fast="off", amp="off")
    run = build_run(prepared, [t], ModelParams())
    stepper = run.stepper
    module = copy.deepcopy(stepper.model.module)
    params = list(module.parameters())
    k = torch.ones(1, device=device)
    state = (
        params,
        [torch.zeros_like(p) for p in params],
        [torch.zeros_like(p) for p in params],
        torch.zeros(1, device=device),
        k * t.lr,
        torch.ones(1, dtype=torch.bool, device=device),
        torch.zeros(1, len(stepper.stat_names), device=device),
        torch.full((1,), -1, dtype=torch.int64, device=device),
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    best = {"plain (before the interface)": float("inf"), "method interface": float("inf")}
    for step in range(2):  # warm-up
        plain_step(module, stepper.data, stepper.keys, state, t, step)
        stepper.step_body()
    for r in range(args.repeats):
        for name in best:
            sync()
            t0 = time.perf_counter()
            for i in range(args.steps):
                if name.startswith("plain"):
                    plain_step(module, stepper.data, stepper.keys, state, t, 2 + r * args.steps + i)
                else:
                    stepper.step_body()
            sync()
            best[name] = min(best[name], (time.perf_counter() - t0) / args.steps)
    print(f"device: {device_name(device)} | torch {torch.__version__} | eager, batch 64 + 64")
    for name, s in best.items():
        print(f"  {name:30s} {1 / s:8.2f} steps/s  ({s * 1000:.1f} ms/step, best of "
              f"{args.repeats} x {args.steps})")  # fmt: skip
    ratio = best["plain (before the interface)"] / best["method interface"]
    print(f"  interface / plain throughput: {ratio:.3f}x")


if __name__ == "__main__":
    main()
