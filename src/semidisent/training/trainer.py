"""The training loop, for one model (:func:`train`) or many at once (:func:`train_many`).

The loop only launches steps (eagerly, or one CUDA-graph replay each) and, every
``train.log_every`` steps, synchronises once: it reads the window's mean losses and the
non-finite record, logs through the :class:`~semidisent.tracking.Tracker`, updates the progress
bar, calls the caller's callback (which may stop models) and, every ``train.checkpoint_every``
steps, writes an atomic checkpoint. Nothing in the loop reads a device value per step.

Batched runs and stopping models. ``train_many`` groups the configurations that can share one
batched model (equal in every train key except ``VARYING_KEYS``) and trains each group as one
vmapped model. The callback gets ``(step, {index: metrics})`` for the models still training
(``index`` = position in the list given to ``train_many``) and returns the indices to stop
(e.g. an Optuna pruner's verdicts). A stopped model is *masked*, not removed: its parameters,
Adam moments and step count are frozen from that step (its gradients are zeroed and its
update skipped, see :mod:`.optim`), while it stays in the stacked tensors so that shapes, the
compiled step and the CUDA graph remain valid; its result is the model as it was when stopped
(status "stopped"). A model whose loss turns non-finite is masked the same way and reported as
"diverged" with no model; in a single-model run it is an error instead
(:class:`NonFiniteLossError`), raised before any checkpoint of the bad state is written.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..artifacts.prepared import Prepared
from ..config.schema import ModelParams, TrainParams
from ..errors import SemidisentError
from ..models.vae import VAE
from ..objectives.s2vae import STAT_NAMES
from ..tracking.base import NULL_TRACKER, Tracker
from .batched import BatchedModel
from .checkpoint import CheckpointDir, check_resumable, run_identity
from .fast import enable_fast
from .runtime import device_name, resolve_amp, resolve_device, resolve_fast
from .sampler import DeviceData
from .step import (
    SingleModel,
    Stepper,
    build_model,
    decodes_labelled,
    objective_config,
    vae_config,
)

log = logging.getLogger(__name__)

# Train keys that may differ between the models of one batched run (they enter the step as
# per-model tensors); every other train key must be equal.
VARYING_KEYS = (
    "seed",
    "beta",
    "gamma_sup",
    "gamma_schedule",
    "gamma_threshold",
    "replacement_rate",
    "lr",
)

Callback = Callable[[int, dict[int, dict[str, float]]], Iterable[int] | None]


class NonFiniteLossError(SemidisentError):
    """The loss became NaN or infinite; the run stopped, its last good checkpoint is kept."""


@dataclass
class TrainResult:
    index: int  # position in the list given to train_many (0 for train)
    params: TrainParams
    status: str  # "completed" | "stopped" (by the callback) | "diverged" (non-finite loss)
    steps: int  # steps this model was trained
    model: VAE | None  # the trained network (CPU, eval mode); None when diverged
    objective_state: dict[str, list] = field(default_factory=dict)  # l2's b, embed's tables
    curves: list[dict[str, float]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    message: str = ""


def structural_key(tp: TrainParams) -> TrainParams:
    """The configuration with the per-model keys blanked: equal keys = one batched model."""
    defaults = TrainParams()
    return dataclasses.replace(tp, **{k: getattr(defaults, k) for k in VARYING_KEYS})


def group_configs(configs: Sequence[TrainParams]) -> list[list[int]]:
    groups: dict[TrainParams, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(structural_key(c), []).append(i)
    return list(groups.values())


def train(
    prepared: Prepared,
    train_params: TrainParams,
    model_params: ModelParams,
    *,
    checkpoint_dir: str | Path | None = None,
    tracker: Tracker = NULL_TRACKER,
    progress: bool = True,
    callback: Callback | None = None,
) -> TrainResult:
    """Train one model; with ``checkpoint_dir`` it checkpoints there and resumes from there."""
    return _train_group(
        prepared, [train_params], [0], model_params, checkpoint_dir, tracker, progress, callback
    )[0]


def train_many(
    prepared: Prepared,
    configs: Sequence[TrainParams],
    model_params: ModelParams,
    *,
    checkpoint_dir: str | Path | None = None,
    tracker: Tracker = NULL_TRACKER,
    progress: bool = True,
    callback: Callback | None = None,
) -> list[TrainResult]:
    """Train every configuration; compatible ones together as one batched model.

    Returns one :class:`TrainResult` per configuration, in the given order. Groups of
    compatible configurations (see :data:`VARYING_KEYS`) are trained one after another; a
    group of one is an ordinary single-model run. ``callback(step, {index: metrics})`` is
    called every ``log_every`` steps and may return indices of models to stop.
    """
    if not configs:
        return []
    results: list[TrainResult | None] = [None] * len(configs)
    groups = group_configs(configs)
    for g, members in enumerate(groups):
        ckdir = None
        if checkpoint_dir is not None:
            ckdir = Path(checkpoint_dir) / f"group-{g}" if len(groups) > 1 else checkpoint_dir
        group = [configs[i] for i in members]
        for r in _train_group(
            prepared, group, members, model_params, ckdir, tracker, progress, callback
        ):
            results[r.index] = r
    return [r for r in results if r is not None]


def _metrics(values: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(STAT_NAMES, values, strict=True)}


def _mean_losses(curve: list[dict[str, float]], start: int = 0) -> dict[str, float]:
    """Average of the window means, weighted by window length (= mean over all steps)."""
    total: dict[str, float] = {}
    prev, n = start, 0
    for point in curve:
        w = point["step"] - prev
        prev = point["step"]
        n += w
        for k in STAT_NAMES:
            total[k] = total.get(k, 0.0) + w * point[k]
    return {k: v / n for k, v in total.items()} if n else {}


@dataclass
class Run:
    """A ready-to-step run: the stepper and the resolved execution settings."""

    stepper: Stepper
    device: torch.device
    amp: torch.dtype | None
    fast: bool
    labelled_batch_size: int


def build_run(prepared: Prepared, configs: Sequence[TrainParams], model_params: ModelParams) -> Run:
    """Models, device-resident data and the step for compatible configurations (one group);
    the fast path is not enabled yet (see :func:`semidisent.training.fast.enable_fast`)."""
    first = configs[0]
    device = resolve_device(first.device)
    amp = resolve_amp(first.amp, device)
    dataset, mask = prepared.dataset, prepared.mask
    channels, height, width = dataset.observation_shape
    if (height, width) != (64, 64):
        raise SemidisentError(
            f"the disentanglement_lib VAE takes 64x64 images; {dataset.name} has "
            f"{height}x{width}: choose a 64x64 dataset (data.dataset)"
        )
    labelled_batch = first.labelled_batch_size or first.batch_size
    objective = objective_config(first, mask.label_sizes, decodes_labelled(configs), amp)
    net = vae_config(model_params, channels)
    modules = [build_model(net, objective, c.seed) for c in configs]
    data = DeviceData(dataset, mask, device, first.batch_size, labelled_batch, net.num_latent)
    model = SingleModel(modules[0], device) if len(modules) == 1 else BatchedModel(modules, device)
    stepper = Stepper(model, data, configs, device)
    return Run(stepper, device, amp, resolve_fast(first.fast, device), labelled_batch)


def _train_group(
    prepared: Prepared,
    configs: Sequence[TrainParams],
    indices: Sequence[int],
    model_params: ModelParams,
    checkpoint_dir: str | Path | None,
    tracker: Tracker,
    progress: bool,
    callback: Callback | None,
) -> list[TrainResult]:
    t0 = time.perf_counter()
    first = configs[0]
    k = len(configs)
    run = build_run(prepared, configs, model_params)
    stepper, device, amp, fast = run.stepper, run.device, run.amp, run.fast
    labelled_batch, mask, data = run.labelled_batch_size, prepared.mask, stepper.data

    amp_name = "bf16" if amp is not None else "off"
    identity = run_identity(
        configs, model_params, prepared.data_hash, mask.digest(), amp_name
    )  # fmt: skip
    ckpt = CheckpointDir(checkpoint_dir) if checkpoint_dir is not None else None
    curves: list[list[dict[str, float]]] = [[] for _ in range(k)]
    status = ["running"] * k
    messages = [""] * k
    stopped_at: list[int | None] = [None] * k
    window_start = 0
    last_ckpt: tuple[Path, int] | None = None
    if ckpt is not None and (found := ckpt.latest()) is not None:
        path, payload = found
        check_resumable(path, payload, identity, first.steps)
        stepper.load_state_dict(payload["state"])
        curves = payload["curves"]
        status, messages, stopped_at = payload["status"], payload["messages"], payload["stopped_at"]
        window_start = payload["window_start"]
        last_ckpt = (path, payload["step"])
        log.info("resuming from %s (step %d)", path, payload["step"])
    start = stepper.step_count
    fast_info = {"compiled": False, "cuda_graph": False}
    if fast:
        fast_info = enable_fast(stepper)
    setup_s = time.perf_counter() - t0

    steps, log_every = first.steps, first.log_every
    ckpt_every = first.checkpoint_every
    desc = "train" if k == 1 else f"train x{k}"
    bar = tqdm(total=steps, initial=start, desc=desc, unit="step", disable=not progress)
    t_loop = time.perf_counter()
    timing: dict[str, float] = {}
    s = start

    def save_checkpoint() -> None:
        nonlocal last_ckpt
        assert ckpt is not None
        payload = {
            "identity": identity,
            "state": stepper.state_dict(),
            "curves": curves,
            "status": status,
            "messages": messages,
            "stopped_at": stopped_at,
            "window_start": window_start,
        }
        last_ckpt = (ckpt.save(s, payload), s)

    def check_finite() -> None:
        bad = stepper.read_bad_steps()
        for j in range(k):
            if bad[j] < 0 or status[j] != "running":
                continue
            where = (
                f"the last good checkpoint is {last_ckpt[0]} (step {last_ckpt[1]})"
                if last_ckpt
                else "no checkpoint was written before it"
            )
            msg = (
                f"non-finite loss at training step {int(bad[j]) + 1} (of {steps}) "
                f"with beta = {configs[j].beta}, lr = {configs[j].lr}, "
                f"replacement_rate = {configs[j].replacement_rate}; the run stopped and {where}"
            )
            if k == 1:
                bar.close()
                raise NonFiniteLossError(msg)
            status[j], messages[j], stopped_at[j] = "diverged", msg, int(bad[j])
            stepper.deactivate(j)
            log.warning("model %d: %s", indices[j], msg)

    while s < steps and "running" in status:
        stepper.run()
        s += 1
        bar.update(1)
        at_log = s % log_every == 0 or s == steps
        at_ckpt = ckpt is not None and (s % ckpt_every == 0 or s == steps)
        if not (at_log or at_ckpt):
            continue
        if at_log:
            values = stepper.read_window(s - window_start)
            window_start = s
            check_finite()
            now = time.perf_counter()
            if "first_log_t" not in timing:
                timing["first_log_t"], timing["first_log_step"] = now, s
            live = [j for j in range(k) if status[j] == "running"]
            reported: dict[int, dict[str, float]] = {}
            for j in live:
                m = _metrics(values[j])
                curves[j].append({"step": s, **m})
                reported[indices[j]] = m
            if reported:
                prefix = (lambda j: "train") if k == 1 else (lambda j: f"train/m{j}")
                tracker.log_metrics(
                    {f"{prefix(j)}/{n}": v for j, m in reported.items() for n, v in m.items()},
                    step=s,
                )
                mean_loss = float(np.mean([m["loss"] for m in reported.values()]))
                bar.set_postfix(loss=f"{mean_loss:.2f}", refresh=False)
            if callback is not None and reported:
                for idx in callback(s, reported) or ():
                    if idx not in reported:  # not a model of this group, or not running
                        continue
                    j = list(indices).index(idx)
                    if status[j] == "running":
                        status[j], stopped_at[j] = "stopped", s
                        messages[j] = f"stopped by the callback at step {s}"
                        stepper.deactivate(j)
        if at_ckpt:
            check_finite()
            save_checkpoint()
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t_end = time.perf_counter()
    if s - window_start > 0:  # every model stopped between log steps
        stepper.read_window(s - window_start)
    if ckpt is not None and (last_ckpt is None or last_ckpt[1] != s):
        save_checkpoint()

    # -- results --------------------------------------------------------------------------
    trained = s - start
    loop_s = t_end - t_loop
    steady_steps = s - timing.get("first_log_step", s)
    steady_s = t_end - timing.get("first_log_t", t_end)
    steps_per_s: float | None = None  # None when nothing was trained (resumed a finished run)
    if steady_steps > 0 and steady_s > 0:
        steps_per_s = steady_steps / steady_s
    elif trained and loop_s > 0:
        steps_per_s = trained / loop_s
    per_step_images = first.batch_size + labelled_batch
    group_stats: dict[str, Any] = {
        "device": device_name(device),
        "device_type": device.type,
        "torch_version": torch.__version__,
        "fast_path": fast_info["compiled"],
        "cuda_graph": fast_info["cuda_graph"],
        "amp": amp_name,
        "batched_models": k,
        "batch_size": first.batch_size,
        "labelled_batch_size": labelled_batch,
        "resumed_from_step": start,
        "steps_run": trained,
        "setup_s": setup_s,
        "train_s": loop_s,
        "wall_s": time.perf_counter() - t0,
        "steps_per_s": steps_per_s,
        "model_steps_per_s": steps_per_s * k if steps_per_s else None,
        "images_per_s": steps_per_s * k * per_step_images if steps_per_s else None,
        "data_resident_bytes": data.resident_bytes,
    }
    if device.type == "cuda":
        group_stats["gpu_memory_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    results = []
    for j, (module, cfg) in enumerate(zip(stepper.models(), configs, strict=True)):
        st = "completed" if status[j] == "running" else status[j]
        final = curves[j][-1] if curves[j] else {}
        stats = {
            **group_stats,
            "status": st,
            "steps": stopped_at[j] if stopped_at[j] is not None else s,
            "final_losses": {n: final[n] for n in STAT_NAMES} if final else {},
            "mean_losses": _mean_losses(curves[j]),
        }
        ok = st != "diverged"
        results.append(
            TrainResult(
                index=indices[j],
                params=cfg,
                status=st,
                steps=stats["steps"],
                model=module.vae if ok else None,
                objective_state=module.objective_state() if ok else {},
                curves=curves[j],
                stats=stats,
                message=messages[j],
            )
        )
    if k == 1 and results[0].stats["final_losses"]:
        loss = results[0].stats["final_losses"]["loss"]
        if not math.isfinite(loss):  # cannot happen: check_finite raised; keep the invariant
            raise NonFiniteLossError(f"final loss is {loss}")
    return results
