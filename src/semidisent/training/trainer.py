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

import contextlib
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
from ..backends import fast_training_kernels
from ..config.schema import METHOD_SECTIONS, ModelParams, TrainParams
from ..errors import SemidisentError
from ..methods import get_method
from ..methods.base import BuildContext, Method, RunSpec
from ..models.vae import VAE
from ..tracking.base import NULL_TRACKER, Tracker
from .batched import BatchedModel
from .checkpoint import CheckpointDir, check_resumable, run_identity
from .fast import enable_fast
from .runtime import device_name, resolve_amp, resolve_device, resolve_fast
from .sampler import DeviceData
from .step import (
    SingleModel,
    Stepper,
    decodes_labelled,
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
    model: VAE | None  # the exported network (CPU, eval mode); None when diverged
    objective_state: dict[str, list] = field(default_factory=dict)  # l2's b, embed's tables
    method_params: Any = None  # the family's own section (None when it has none)
    curves: list[dict[str, float]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    message: str = ""


Config = TrainParams | RunSpec


def as_spec(config: Config, model_params: ModelParams) -> RunSpec:
    """A RunSpec; a bare TrainParams gets the family's default section (or None)."""
    if isinstance(config, RunSpec):
        return config
    section = METHOD_SECTIONS.get(model_params.name)
    return RunSpec(config, section() if section is not None else None)


def structural_key(spec: RunSpec, method: Method | None = None) -> tuple:
    """The configuration with the per-model keys blanked: equal keys = one batched model."""
    defaults = TrainParams()
    train = dataclasses.replace(spec.train, **{k: getattr(defaults, k) for k in VARYING_KEYS})
    own = spec.method
    if own is not None and method is not None and method.varying:
        blank = type(own)()
        own = dataclasses.replace(own, **{k: getattr(blank, k) for k in method.varying})
    return (train, own)


def group_configs(
    configs: Sequence[Config], model_params: ModelParams | None = None
) -> list[list[int]]:
    model_params = model_params or ModelParams()
    method = get_method(model_params.name)
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(structural_key(as_spec(c, model_params), method), []).append(i)
    return list(groups.values())


def train(
    prepared: Prepared,
    train_params: Config,
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
    configs: Sequence[Config],
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
    groups = group_configs(configs, model_params)
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


def _metrics(values: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    return {name: float(v) for name, v in zip(names, values, strict=True)}


def _mean_losses(curve: list[dict[str, float]], start: int = 0) -> dict[str, float]:
    """Average of the window means, weighted by window length (= mean over all steps)."""
    total: dict[str, float] = {}
    prev, n = start, 0
    for point in curve:
        w = point["step"] - prev
        prev = point["step"]
        n += w
        for k in point:
            if k == "step":
                continue
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
    specs: list[RunSpec]


def build_run(prepared: Prepared, configs: Sequence[Config], model_params: ModelParams) -> Run:
    """Models, device-resident data and the step for compatible configurations (one group);
    the fast path is not enabled yet (see :func:`semidisent.training.fast.enable_fast`)."""
    specs = [as_spec(c, model_params) for c in configs]
    first = specs[0].train
    device = resolve_device(first.device)
    amp = resolve_amp(first.amp, device)
    dataset, mask = prepared.dataset, prepared.mask
    channels = dataset.observation_shape[0]
    labelled_batch = first.labelled_batch_size or first.batch_size
    method = get_method(model_params.name)
    ctx = BuildContext(
        model=model_params,
        label_sizes=tuple(int(k) for k in mask.label_sizes),
        in_channels=channels,
        amp_dtype=amp,
        decode_labelled=decodes_labelled([s.train for s in specs]),
        all_labels_observed=bool(np.asarray(mask.observed).all()),
        observation_shape=tuple(int(d) for d in dataset.observation_shape),
        factor_names=tuple(mask.factor_names),
        num_unlabelled=dataset.num_rows - (0 if dataset.holdout is None else len(dataset.holdout)),
        num_labelled=len(mask.train),
    )
    modules = [method.build(s, ctx) for s in specs]
    extra = method.extra_uniforms(ctx, first.batch_size, labelled_batch, specs[0])
    data = DeviceData(
        dataset, mask, device, first.batch_size, labelled_batch, model_params.num_latent, extra
    )
    model = SingleModel(modules[0], device) if len(modules) == 1 else BatchedModel(modules, device)
    stepper = Stepper(model, data, specs, device, method)
    return Run(stepper, device, amp, resolve_fast(first.fast, device), labelled_batch, specs)


class GroupRun:
    """One group of compatible configurations, built once (models, device-resident data, the
    compiled step and its CUDA graph) and trained in one or more stretches: :meth:`advance`
    trains to a step and returns the models as they are there. A search trains a batch rung by
    rung this way without re-uploading the data, recompiling or recapturing per rung.

    With ``checkpoint_dir`` it resumes from the newest checkpoint there and writes one at the
    end of every stretch (and every ``checkpoint_every`` steps). The configurations' ``steps``
    is the run's length; stretches end at or before it.
    """

    def __init__(
        self,
        prepared: Prepared,
        configs: Sequence[Config],
        indices: Sequence[int],
        model_params: ModelParams,
        checkpoint_dir: str | Path | None = None,
        tracker: Tracker = NULL_TRACKER,
        progress: bool = True,
    ):
        t0 = time.perf_counter()
        self.indices = list(indices)
        self.tracker, self.progress = tracker, progress
        self.k = k = len(configs)
        self.prepared = prepared
        run = build_run(prepared, configs, model_params)
        self.specs = run.specs
        self.configs = [spec.train for spec in run.specs]
        self.method = run.stepper.method
        self.stepper, self.device, self.amp = run.stepper, run.device, run.amp
        self.labelled_batch = run.labelled_batch_size
        self.amp_name = "bf16" if run.amp is not None else "off"
        mask = prepared.mask
        self.identity = run_identity(
            self.specs, model_params, prepared.data_hash, mask.digest(), self.amp_name
        )
        self.ckpt = CheckpointDir(checkpoint_dir) if checkpoint_dir is not None else None
        self.curves: list[list[dict[str, float]]] = [[] for _ in range(k)]
        self.status = ["running"] * k
        self.messages = [""] * k
        self.stopped_at: list[int | None] = [None] * k
        self.window_start = 0
        self.last_ckpt: tuple[Path, int] | None = None
        if self.ckpt is not None and (found := self.ckpt.latest()) is not None:
            path, payload = found
            check_resumable(path, payload, self.identity, self.configs[0].steps)
            self.stepper.load_state_dict(payload["state"])
            self.curves = payload["curves"]
            self.status, self.messages = payload["status"], payload["messages"]
            self.stopped_at = payload["stopped_at"]
            self.window_start = payload["window_start"]
            self.last_ckpt = (path, payload["step"])
            log.info("resuming from %s (step %d)", path, payload["step"])
        self.s = self.resumed_from = self.stepper.step_count
        self.fast = run.fast
        self.fast_info: dict[str, Any] = {"compiled": False, "cuda_graph": False}
        if run.fast:
            with self._kernels():
                self.fast_info = enable_fast(self.stepper)
        self.setup_s = time.perf_counter() - t0

    def _kernels(self) -> contextlib.AbstractContextManager[None]:
        """TF32 and cuDNN autotuning while the fast step runs on CUDA, restored afterwards."""
        if self.device.type == "cuda" and self.fast:
            return fast_training_kernels()
        return contextlib.nullcontext()

    # -- checkpoints and the non-finite record ------------------------------------------------
    def _save_checkpoint(self) -> None:
        assert self.ckpt is not None
        payload = {
            "identity": self.identity,
            "state": self.stepper.state_dict(),
            "curves": self.curves,
            "status": self.status,
            "messages": self.messages,
            "stopped_at": self.stopped_at,
            "window_start": self.window_start,
        }
        self.last_ckpt = (self.ckpt.save(self.s, payload), self.s)

    def _check_finite(self, bar: Any) -> None:
        bad = self.stepper.read_bad_steps()
        for j in range(self.k):
            if bad[j] < 0 or self.status[j] != "running":
                continue
            where = (
                f"the last good checkpoint is {self.last_ckpt[0]} (step {self.last_ckpt[1]})"
                if self.last_ckpt
                else "no checkpoint was written before it"
            )
            cfg = self.configs[j]
            msg = (
                f"non-finite loss at training step {int(bad[j]) + 1} (of {cfg.steps}) "
                f"with beta = {cfg.beta}, lr = {cfg.lr}, "
                f"replacement_rate = {cfg.replacement_rate}; the run stopped and {where}"
            )
            if self.k == 1:
                bar.close()
                raise NonFiniteLossError(msg)
            self.status[j], self.messages[j], self.stopped_at[j] = "diverged", msg, int(bad[j])
            self.stepper.deactivate(j)
            log.warning("model %d: %s", self.indices[j], msg)

    # -- training -----------------------------------------------------------------------------
    def advance(
        self, to_step: int | None = None, callback: Callback | None = None
    ) -> list[TrainResult]:
        """Train every running model to ``to_step`` (default: the run's length); the results
        are the models at the step reached."""
        steps = self.configs[0].steps if to_step is None else min(to_step, self.configs[0].steps)
        t0 = time.perf_counter()
        start = self.s
        with self._kernels():
            loop_s, timing = self._loop(steps, callback)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self.s - self.window_start > 0:  # every model stopped between log steps
            self.stepper.read_window(self.s - self.window_start)
            self.window_start = self.s
        if self.ckpt is not None and (self.last_ckpt is None or self.last_ckpt[1] != self.s):
            self._save_checkpoint()
        wall_s = time.perf_counter() - t0 + (self.setup_s if start == self.resumed_from else 0.0)
        return self._results(start, loop_s, timing, wall_s)

    def _loop(self, steps: int, callback: Callback | None) -> tuple[float, dict[str, float]]:
        k, stepper, s = self.k, self.stepper, self.s
        first = self.configs[0]
        log_every, ckpt_every = first.log_every, first.checkpoint_every
        desc = "train" if k == 1 else f"train x{k}"
        bar = tqdm(total=steps, initial=s, desc=desc, unit="step", disable=not self.progress)
        t_loop = time.perf_counter()
        timing: dict[str, float] = {}
        while s < steps and "running" in self.status:
            stepper.run()
            s += 1
            self.s = s
            bar.update(1)
            at_log = s % log_every == 0 or s == steps
            at_ckpt = self.ckpt is not None and (s % ckpt_every == 0 or s == steps)
            if not (at_log or at_ckpt):
                continue
            if at_log:
                values = stepper.read_window(s - self.window_start)
                self.window_start = s
                self._check_finite(bar)
                now = time.perf_counter()
                if "first_log_t" not in timing:
                    timing["first_log_t"], timing["first_log_step"] = now, s
                self._report(s, values, bar, callback)
            if at_ckpt:
                self._check_finite(bar)
                self._save_checkpoint()
        bar.close()
        timing["end_t"] = time.perf_counter()
        return timing["end_t"] - t_loop, timing

    def _report(self, s: int, values: np.ndarray, bar: Any, callback: Callback | None) -> None:
        live = [j for j in range(self.k) if self.status[j] == "running"]
        reported: dict[int, dict[str, float]] = {}
        for j in live:
            m = _metrics(values[j], self.stepper.stat_names)
            self.curves[j].append({"step": s, **m})
            reported[self.indices[j]] = m
        if not reported:
            return
        prefix = (lambda j: "train") if self.k == 1 else (lambda j: f"train/m{j}")
        self.tracker.log_metrics(
            {f"{prefix(j)}/{n}": v for j, m in reported.items() for n, v in m.items()}, step=s
        )
        bar.set_postfix(loss=f"{float(np.mean([m['loss'] for m in reported.values()])):.2f}",
                        refresh=False)  # fmt: skip
        if callback is None:
            return
        for idx in callback(s, reported) or ():
            if idx not in reported:  # not a model of this group, or not running
                continue
            j = self.indices.index(idx)
            if self.status[j] == "running":
                self.status[j], self.stopped_at[j] = "stopped", s
                self.messages[j] = f"stopped by the callback at step {s}"
                self.stepper.deactivate(j)

    def _results(
        self, start: int, loop_s: float, timing: dict[str, float], wall_s: float
    ) -> list[TrainResult]:
        s, k, first = self.s, self.k, self.configs[0]
        trained = s - start
        steady_steps = s - timing.get("first_log_step", s)
        steady_s = timing["end_t"] - timing.get("first_log_t", timing["end_t"])
        steps_per_s: float | None = None  # None when nothing was trained (a finished run)
        if steady_steps > 0 and steady_s > 0:
            steps_per_s = steady_steps / steady_s
        elif trained and loop_s > 0:
            steps_per_s = trained / loop_s
        per_step_images = first.batch_size + self.labelled_batch
        group_stats: dict[str, Any] = {
            "device": device_name(self.device),
            "device_type": self.device.type,
            "torch_version": torch.__version__,
            "fast_path": self.fast_info["compiled"],
            "cuda_graph": self.fast_info["cuda_graph"],
            "fast_path_note": self.fast_info.get("fast_path_note", ""),
            "amp": self.amp_name,
            "batched_models": k,
            "batch_size": first.batch_size,
            "labelled_batch_size": self.labelled_batch,
            "resumed_from_step": self.resumed_from,
            "steps_run": trained,
            "setup_s": self.setup_s,
            "train_s": loop_s,
            "wall_s": wall_s,
            "steps_per_s": steps_per_s,
            "model_steps_per_s": steps_per_s * k if steps_per_s else None,
            "images_per_s": steps_per_s * k * per_step_images if steps_per_s else None,
            "data_resident_bytes": self.stepper.data.resident_bytes,
        }
        if self.device.type == "cuda":
            group_stats["gpu_memory_peak_bytes"] = torch.cuda.max_memory_allocated(self.device)
            group_stats["gpu_memory_allocated_bytes"] = torch.cuda.memory_allocated(self.device)
        results = []
        modules = self.stepper.models()
        for j, (module, cfg) in enumerate(zip(modules, self.configs, strict=True)):
            st = "completed" if self.status[j] == "running" else self.status[j]
            if st == "completed" and s < cfg.steps:
                st = "running"  # a stretch ended before the run's length
            final = self.curves[j][-1] if self.curves[j] else {}
            stats = {
                **group_stats,
                "status": st,
                "steps": self.stopped_at[j] if self.stopped_at[j] is not None else s,
                "final_losses": {n: final[n] for n in self.stepper.stat_names} if final else {},
                "mean_losses": _mean_losses(self.curves[j]),
            }
            ok = st != "diverged"
            if ok and s >= cfg.steps:
                self.method.after_training(module, self.prepared)
            results.append(
                TrainResult(
                    index=self.indices[j],
                    params=cfg,
                    status=st,
                    steps=stats["steps"],
                    model=self.method.export(module) if ok else None,
                    objective_state=self.method.export_state(module) if ok else {},
                    method_params=self.specs[j].method,
                    curves=list(self.curves[j]),
                    stats=stats,
                    message=self.messages[j],
                )
            )
        if k == 1 and results[0].stats["final_losses"]:
            loss = results[0].stats["final_losses"]["loss"]
            if not math.isfinite(loss):  # cannot happen: check_finite raised; keep the invariant
                raise NonFiniteLossError(f"final loss is {loss}")
        return results


def _train_group(
    prepared: Prepared,
    configs: Sequence[Config],
    indices: Sequence[int],
    model_params: ModelParams,
    checkpoint_dir: str | Path | None,
    tracker: Tracker,
    progress: bool,
    callback: Callback | None,
) -> list[TrainResult]:
    group = GroupRun(prepared, configs, indices, model_params, checkpoint_dir, tracker, progress)
    return group.advance(callback=callback)
