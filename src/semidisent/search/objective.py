"""Trials asked in batches, trained together as one batched model, evaluated honestly, told.

The loop (:func:`optimize`) asks ``search.trials_per_batch`` trials at once (Optuna's
ask-and-tell), turns each into its own params (:func:`trial_run_params`: ``replace(params.train,
steps=search.steps, **train keys)``, its ``model.name`` and its family's section with the
family keys) and trains the compatible ones as ONE vmapped model
(:class:`semidisent.training.trainer.GroupRun`). Trials of different families (a searched
``model.name``) are trained in separate groups, one family at a time; within a family,
configurations differing in a structural key (e.g. a categorical ``supervised_loss``, or
FactorVAE's ``discriminator_units``) form separate groups trained one after another.

Intermediate values. Training runs in ``search.reports`` chunks ("rungs"): each chunk resumes
the batch's checkpoint with a larger step count (the trainer extends a run exactly as an
uninterrupted longer one), so at every rung the models exist and the *objective itself* (the
few-label score on the labelled pool) is evaluated and reported to the pruner. Pruning
on the same quantity that is finally optimised keeps the pruner honest: a training loss would
penalise large beta by construction. A pruned trial is told PRUNED at once and its model is
masked in the batch (the trainer's callback); its compute is still spent while the others train
(shapes are kept), so within a batch pruning saves the evaluation and, when every member is
pruned, the rest of the batch. The p = 0 baseline trials (``search.baseline_trials``) report
their values but are never pruned: the summary compares the best trial with them.

Honest objective. Values told to Optuna come only from the labelled pool (``val_*``, under
``eval.few_label_protocol``: disentanglement_lib's protocol by default, val_mig on the whole pool
and val_dci / val_sap fitted on training's labels and scored on the held-out ones; or the held-out
labels only) or from training statistics; the full-ground-truth metrics of ``search.gt_metrics``
are computed for completed trials, stored beside them (trial user attribute ``gt``, the child
MLflow run, ``trials.csv``), and never used for selection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts.hashing import write_json
from ..artifacts.prepared import Prepared
from ..config.schema import ModelParams, Params, TrainParams
from ..config.validation import to_plain
from ..errors import ParamsError, SemidisentError
from ..tracking.base import Tracker
from .space import FEW_LABEL_OBJECTIVES, Dimension, trial_sections
from .study import (
    BASELINE_ATTR,
    FAILURE_ATTR,
    Heartbeat,
    Owner,
    counts,
    distributions,
    fail_and_requeue,
    grid_size,
    requeue_lost_trials,
    rung_steps,
)

if TYPE_CHECKING:
    import optuna

    from ..methods.base import RunSpec

log = logging.getLogger(__name__)


@dataclass
class SearchContext:
    """Everything a worker's trials share."""

    params: Params
    prepared: Prepared
    study: optuna.Study
    study_name: str
    dims: list[Dimension]
    out_dir: Path
    owner: Owner
    heartbeat: Heartbeat
    retry: Any  # the re-queue callback of interrupted trials
    parent_run_id: str | None = None
    progress: bool = True
    told: list[int] = field(default_factory=list)  # trial numbers this call finished
    # Device memory allocated after each rung (CUDA; None on CPU): one group is built per batch
    # and advanced rung by rung, so it stays flat instead of growing per rung.
    rung_memory: list[int | None] = field(default_factory=list)


@dataclass
class TrialRun:
    """One asked trial inside a batch: ``params`` are its own (:func:`trial_run_params`)."""

    trial: optuna.Trial
    params: Params
    tracker: Tracker
    logged_step: int = 0  # the last training-curve step sent to the child run
    # Models trained together with this one (the batched model's K): evidence, per trial, that
    # a batch really shared one model (a structural key splits it into groups).
    batched_models: int | None = None
    done: bool = False
    t0: float = field(default_factory=time.perf_counter)

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def train(self) -> TrainParams:
        return self.params.train

    @property
    def model(self) -> ModelParams:
        return self.params.model

    @property
    def spec(self) -> RunSpec:
        """What the trainer trains: the train section and the trial's family section."""
        from ..methods.base import RunSpec

        return RunSpec(self.params.train, self.params.method_params())


# ------------------------------------------------------------------------------ budget


@dataclass(frozen=True)
class Budget:
    """How many more trials this call may ask.

    ``study``: until the study holds ``n_trials`` finished or running trials (all workers);
    ``worker``: until this worker id has ``n_trials`` of its own (a restarted worker with the same
    id only does the remainder); ``call``: ``n_trials`` new trials in this call.
    """

    n_trials: int
    scope: str  # "study" | "worker" | "call"
    worker: str | None = None
    grid: int | None = None  # the grid's size (grid sampler)

    def remaining(self, study: optuna.Study, asked: int) -> int:
        trials = study.get_trials(deepcopy=False)
        if self.scope == "call":
            left = self.n_trials - asked
        else:
            c = counts(trials, self.worker if self.scope == "worker" else None)
            left = self.n_trials - c["finished"] - c["running"]
        if self.grid is not None:
            c = counts(trials)
            left = min(left, self.grid - c["finished"] - c["running"])
        return max(0, left)


def trials_per_batch(params: Params) -> int:
    """``search.trials_per_batch``, or for null: 8 on CUDA (one small model leaves a GPU idle),
    1 on a CPU (compute bound: the batched model's grouped convolutions are slower there)."""
    if params.search.trials_per_batch is not None:
        return params.search.trials_per_batch
    from ..training.runtime import resolve_device

    return 8 if resolve_device(params.train.device).type == "cuda" else 1


def optimize(ctx: SearchContext, budget: Budget, timeout_s: float | None = None) -> int:
    """Ask, train and tell batches until the budget or the time is spent; returns trials run."""
    per_batch = trials_per_batch(ctx.params)
    start = time.monotonic()
    asked = 0
    while True:
        requeue_lost_trials(ctx.study, ctx.owner, ctx.retry)
        k = min(per_batch, budget.remaining(ctx.study, asked))
        if k <= 0:
            break
        if timeout_s is not None and time.monotonic() - start >= timeout_s:
            log.info("search.timeout_s = %s reached: no new trials", timeout_s)
            break
        run_batch(ctx, k)
        asked += k
    remove_stale_checkpoints(ctx)
    return asked


def remove_stale_checkpoints(ctx: SearchContext) -> None:
    """Remove batch checkpoints nobody can resume: none of their trials is running, and none
    has a re-queued copy waiting (a batch killed after some of its trials were told comes back
    with another composition, hence another key)."""
    import optuna

    root = ctx.out_dir / "checkpoints"
    if not root.is_dir():
        return
    trials = ctx.study.get_trials(deepcopy=False)
    live: set[int] = set()
    for t in trials:
        if t.state == optuna.trial.TrialState.RUNNING:
            live.add(t.number)
        elif t.state == optuna.trial.TrialState.WAITING:
            live.update(t.system_attrs.get("retry_history") or [])
    for d in root.iterdir():
        try:
            numbers = set(json.loads((d / BATCH_FILE).read_text())["trials"])
        except (OSError, ValueError, KeyError):
            continue  # being written, or not ours
        if not numbers & live:
            shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        root.rmdir()


# ------------------------------------------------------------------------------ one batch


def trial_run_params(params: Params, trial_params: dict[str, Any]) -> Params:
    """The trial's own params: ``params`` with train = replace(train, steps=search.steps,
    **suggested train keys), its model.name (searched, or the fixed one) and its family's
    section with the suggested family keys (keys of other families do not apply to it). Checked
    as at load: the sections' cross-field rules and the cross-section ones (e.g. s2_mine_vae
    with a partial labeller); a ParamsError fails the trial as an invalid combination."""
    name, sections = trial_sections(trial_params, params.model.name)
    tp = dataclasses.replace(params.train, steps=params.search.steps, **sections["train"])
    tp.validate("train")
    changes: dict[str, Any] = {"train": tp}
    if name != params.model.name:
        changes["model"] = dataclasses.replace(params.model, name=name)
    if sections.get(name):
        own = dataclasses.replace(getattr(params, name), **sections[name])
        validate = getattr(own, "validate", None)
        if callable(validate):
            validate(name)
        changes[name] = own
    run = dataclasses.replace(params, **changes)
    run.validate()
    return run


def trial_train_params(params: Params, trial_params: dict[str, Any]) -> TrainParams:
    """The trial's train section (the contract: replace(train, steps=search.steps,
    **suggested train keys)), checked: :func:`trial_run_params`."""
    return trial_run_params(params, trial_params).train


def _open_tracker(ctx: SearchContext, trial: optuna.Trial, run_params: Params) -> Tracker:
    from ..tracking.factory import open_tracker

    p = ctx.params
    if not p.tracking.enabled:
        return Tracker()
    tags = {
        "semidisent.stage": "search-trial",
        "optuna.study": ctx.study_name,
        "optuna.trial": str(trial.number),
        "worker": ctx.owner.worker,
    }
    try:
        tracker = open_tracker(
            p.tracking,
            run_name=f"{ctx.study_name}-trial-{trial.number}",
            parent_run_id=ctx.parent_run_id,
            tags=tags,
            backlog_path=ctx.out_dir / "tracking" / f"trial-{trial.number}.jsonl",
        )
    except SemidisentError as e:  # tracking never stops a search
        log.warning("trial %d is not tracked: %s", trial.number, e)
        return Tracker()
    own = run_params.method_params()
    tracker.log_params(
        {
            "train": to_plain(run_params.train),
            "model": run_params.section("model"),
            # the trial's family section (absent for families without one)
            **({run_params.model.name: to_plain(own)} if own is not None else {}),
            "data": p.section("data"),
            "supervision": p.section("supervision"),
            "search": {"study": ctx.study_name, "trial": trial.number, "worker": ctx.owner.worker},
        }
    )
    run_id = getattr(tracker, "run_id", None)
    if run_id:
        trial.set_user_attr("mlflow_run_id", run_id)
    return tracker


def _finish(
    ctx: SearchContext,
    run: TrialRun,
    state: str,
    values: Sequence[float] | None = None,
    failure: str | None = None,
) -> None:
    """Tell Optuna and close the child run (once)."""
    import optuna

    if run.done:
        return
    run.done = True
    trial = run.trial
    trial.set_user_attr("duration_s", round(time.perf_counter() - run.t0, 3))
    if run.batched_models is not None:
        trial.set_user_attr("batched_models", run.batched_models)
    if failure is not None:
        trial.set_user_attr(FAILURE_ATTR, failure[:2000])
        log.warning("trial %d failed: %s", trial.number, failure)
    st = {
        "COMPLETE": optuna.trial.TrialState.COMPLETE,
        "PRUNED": optuna.trial.TrialState.PRUNED,
        "FAIL": optuna.trial.TrialState.FAIL,
    }[state]
    ctx.study.tell(trial, values=list(values) if values is not None else None, state=st)
    ctx.heartbeat.remove([trial._trial_id])
    ctx.told.append(trial.number)
    tags = {"optuna.state": state}
    if run.batched_models is not None:
        tags["batched_models"] = str(run.batched_models)
    if failure:
        tags["failure"] = failure[:500]
    run.tracker.set_tags(tags)
    run.tracker.close("FAILED" if state == "FAIL" else "FINISHED")


def run_batch(ctx: SearchContext, k: int) -> None:
    """Ask ``k`` trials, train them together, tell them."""
    dists = distributions(ctx.dims)
    with warnings.catch_warnings():
        # Optuna expects heartbeats with Study.optimize only; this loop records its own.
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trials = [ctx.study.ask(dists) for _ in range(k)]
    for t in trials:
        for key, value in ctx.owner.attrs().items():
            t.set_user_attr(key, value)
        for stale in ("mlflow_run_id", "gt", "model_path"):  # copied into a re-queued trial
            if t.user_attrs.get(stale) is not None:
                t.set_user_attr(stale, None)
    ctx.heartbeat.add(t._trial_id for t in trials)
    log.info("batch of %d trials: %s", k, [t.number for t in trials])
    runs: list[TrialRun] = []
    try:
        for t in trials:
            try:
                run_params = trial_run_params(ctx.params, t.params)
            except ParamsError as e:  # e.g. replacement_target scaled with supervised_loss xent
                run = TrialRun(t, ctx.params, Tracker())
                _finish(ctx, run, "FAIL", failure=f"invalid combination: {e}")
                continue
            runs.append(TrialRun(t, run_params, _open_tracker(ctx, t, run_params)))
        for group in trial_groups(runs):
            train_group(ctx, group)
    except KeyboardInterrupt:
        # Interrupted (Ctrl-C, SIGTERM): give the unfinished trials back to the queue now.
        left = [r for r in runs if not r.done]
        try:
            fail_and_requeue(ctx.study, [r.trial._trial_id for r in left], ctx.retry)
        except Exception as e:  # the next worker on this machine re-queues them instead
            log.warning("interrupted trials not re-queued now: %s", e)
        for r in left:
            r.tracker.set_tags({"optuna.state": "INTERRUPTED"})
            r.tracker.close("KILLED")
        raise
    except BaseException as e:
        for r in runs:
            try:
                _finish(ctx, r, "FAIL", failure=f"{type(e).__name__}: {e}")
            except Exception as again:  # keep the original error; heartbeats will re-queue
                log.warning("trial %d could not be failed: %s", r.number, again)
        raise
    finally:
        ctx.heartbeat.remove(t._trial_id for t in trials)


def trial_groups(runs: Sequence[TrialRun]) -> list[list[TrialRun]]:
    """The batch's trials in the groups trained together: one family (model params) per group,
    since a batched run builds one family's modules; within it, the trainer's grouping (equal
    structural keys of train and of the family's section)."""
    from ..training import group_configs

    by_model: dict[ModelParams, list[TrialRun]] = {}
    for r in runs:
        by_model.setdefault(r.model, []).append(r)
    groups = []
    for model, members in by_model.items():
        for idx in group_configs([r.spec for r in members], model):
            groups.append([members[i] for i in idx])
    return groups


BATCH_FILE = "trials.json"  # the trial numbers a batch checkpoint belongs to


def _checkpoint_dir(ctx: SearchContext, runs: Sequence[TrialRun]) -> Path:
    """Keyed by the group's configurations: a re-queued batch (same parameters, same order)
    resumes the interrupted one's checkpoint, whoever runs it on this machine."""
    payload: dict[str, Any] = {
        "train": [{k: v for k, v in to_plain(r.train).items() if k != "steps"} for r in runs],
        "model": runs[0].params.section("model"),  # one family per group
        "data": ctx.prepared.data_hash,
        "mask": ctx.prepared.mask.digest(),
    }
    own = [to_plain(r.spec.method) for r in runs if r.spec.method is not None]
    if own:  # the family's section (absent for families without one: keys stay as before)
        payload["method"] = own
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return ctx.out_dir / "checkpoints" / key


def _checkpoint_step(ckdir: Path) -> int:
    """The newest checkpoint's step, from its file name (ckpt-<step>.pt); 0 when none."""
    steps = []
    for f in ckdir.glob("ckpt-*.pt"):
        try:
            steps.append(int(f.stem.split("-")[1]))
        except (IndexError, ValueError):
            continue
    return max(steps, default=0)


def train_group(ctx: SearchContext, runs: list[TrialRun]) -> None:
    """Train one group of compatible trials rung by rung; report, prune, complete. The group
    is built once (data on the device, compiled step, CUDA graph) and advanced from rung to
    rung; every rung ends in a checkpoint, which a re-queued batch resumes."""
    from ..methods.base import RunSpec
    from ..training import NonFiniteLossError
    from ..training.trainer import GroupRun

    sp = ctx.params.search
    ckdir = _checkpoint_dir(ctx, runs)
    resumed = _checkpoint_step(ckdir)
    ckdir.mkdir(parents=True, exist_ok=True)
    write_json(ckdir / BATCH_FILE, {"study": ctx.study_name, "trials": [r.number for r in runs]})
    rungs = [s for s in rung_steps(sp) if s >= resumed]
    if resumed:
        log.info("resuming trials %s from step %d", [r.number for r in runs], resumed)
    final_results: dict[int, Any] = {}

    def callback(step: int, metrics: dict[int, dict[str, float]]) -> list[int]:
        # Live curves in each trial's child run; pruned trials are masked in the batch.
        for j, m in metrics.items():
            run = runs[j]
            if step > run.logged_step and not run.done:
                run.tracker.log_metrics({f"train/{n}": v for n, v in m.items()}, step=step)
                run.logged_step = step
        return [j for j in metrics if runs[j].done]

    # Execution settings only: every rung ends in a checkpoint anyway, so more frequent ones
    # would write K models' states (3 x 3 MB each) for little gain.
    every = max(ctx.params.train.checkpoint_every, sp.steps // max(1, len(rung_steps(sp))))
    configs = [
        RunSpec(dataclasses.replace(r.train, steps=sp.steps, checkpoint_every=every), r.spec.method)
        for r in runs
    ]
    group = GroupRun(
        ctx.prepared,
        configs,
        list(range(len(runs))),
        runs[0].model,  # trial_groups: one family per group
        checkpoint_dir=ckdir,
        progress=ctx.progress,
    )
    for step in rungs:
        if all(r.done for r in runs):
            break
        try:
            results = group.advance(step, callback)
            ctx.rung_memory.append(results[0].stats.get("gpu_memory_allocated_bytes"))
        except NonFiniteLossError as e:  # a group of one (batched runs mask the model instead)
            for r in runs:
                _finish(ctx, r, "FAIL", failure=f"diverged: {e}")
            break
        final = step == sp.steps
        for run, res in zip(runs, results, strict=True):
            if run.done:
                continue
            points = [p for p in res.curves if p["step"] > run.logged_step]
            for p in points:  # e.g. curves restored from a checkpoint
                run.tracker.log_metrics(
                    {f"train/{n}": v for n, v in p.items() if n != "step"}, step=int(p["step"])
                )
            if points:
                run.logged_step = int(points[-1]["step"])
            run.batched_models = res.stats.get("batched_models", run.batched_models)
            if res.status == "diverged" or res.model is None:
                _finish(ctx, run, "FAIL", failure=f"diverged: {res.message}")
                continue
            names = list(sp.objectives) if final else list(sp.objectives[:1])
            try:
                values = objective_values(ctx, res, names)
            except SemidisentError as e:  # e.g. NaN codes
                _finish(ctx, run, "FAIL", failure=f"objective not computable: {e}")
                continue
            run.tracker.log_metrics({f"objective/{n}": v for n, v in values.items()}, step=step)
            bad = [n for n, v in values.items() if not math.isfinite(v)]
            if final:
                if bad:
                    _finish(ctx, run, "FAIL", failure=f"objective {bad[0]} is not finite")
                else:
                    final_results[id(run)] = (res, [values[n] for n in sp.objectives])
                continue
            if bad:  # nothing to report at this rung
                continue
            with warnings.catch_warnings():
                # A re-queued trial inherits the values its first run reported.
                warnings.filterwarnings("ignore", message="The reported value is ignored")
                run.trial.report(values[sp.objectives[0]], step)
            # The p = 0 baseline trials are never pruned: the summary compares the best trial
            # with a complete baseline (their values are still reported).
            if not run.trial.user_attrs.get(BASELINE_ATTR) and run.trial.should_prune():
                run.trial.set_user_attr("steps", step)
                _finish(ctx, run, "PRUNED")
                log.info("trial %d pruned at step %d", run.number, step)
    for run in runs:
        if not run.done and id(run) in final_results:
            res, values = final_results[id(run)]
            complete_trial(ctx, run, res, values)
        elif not run.done:  # cannot happen: every rung ends in a result or a failure
            _finish(ctx, run, "FAIL", failure="no result")
    shutil.rmtree(ckdir, ignore_errors=True)
    with contextlib.suppress(OSError):  # the parent, when no other batch left one there
        ckdir.parent.rmdir()


# ------------------------------------------------------------------------------ objective


def objective_values(ctx: SearchContext, result: Any, names: Sequence[str]) -> dict[str, float]:
    """The objectives of one trained model: few-label headline scores on the labelled pool (under
    eval.few_label_protocol), or the last training window's mean statistics."""
    out: dict[str, float] = {}
    few = [n for n in names if n in FEW_LABEL_OBJECTIVES]
    if few:
        from ..metrics.few_label import compute_few_label
        from ..metrics.names import HEADLINE
        from ..metrics.registry import metric_settings
        from ..metrics.representation import vae_representation

        ep = ctx.params.eval
        settings = metric_settings(
            "val_mig", ep.mode, ep.device, 1.0, False, ep.cpu_threads, ep.cpu_workers
        )
        settings = dataclasses.replace(settings, metrics=tuple(few), protocol=ep.few_label_protocol)
        rep = vae_representation(result.model, device=settings.device, batch_size=ep.batch_size)
        dataset, mask = ctx.prepared.dataset, ctx.prepared.mask
        scores = compute_few_label(dataset, mask, rep, ep.seed, settings)
        if not scores:
            raise SemidisentError(
                "the labelled pool has no held-out part (supervision.validation_fraction = 0): "
                "few-label objectives need one"
            )
        for n in few:
            v = scores[n].get(HEADLINE[n])
            out[n] = float("nan") if v is None else float(v)
    last = result.curves[-1] if result.curves else {}
    for n in names:
        if n not in out:
            out[n] = float(last.get(n, float("nan")))
    return out


def complete_trial(ctx: SearchContext, run: TrialRun, result: Any, values: Sequence[float]) -> None:
    """Save the model, compute the full-ground-truth metrics beside it, tell COMPLETE."""
    from ..models.io import save_model

    p, sp = run.params, ctx.params.search
    trial_dir = ctx.out_dir / "trials" / f"{run.number:05d}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    prepared = ctx.prepared
    own = p.method_params()
    meta = {
        "train": to_plain(run.train),
        "model": p.section("model"),
        # as semidisent train writes it: the family's section under its name
        **({p.model.name: to_plain(own)} if own is not None else {}),
        "data": p.section("data"),
        "content_sha256": prepared.data_hash,
        "mask_sha256": prepared.mask.digest(),
        "steps": result.steps,
        "final_losses": result.stats.get("final_losses", {}),
        "device": result.stats.get("device"),
        "objective_state": result.objective_state,
        "supervised_factors": list(prepared.mask.factor_names),
        "search": {
            "study": ctx.study_name,
            "trial": run.number,
            "objectives": dict(zip(sp.objectives, values, strict=True)),
        },
    }
    model_path = save_model(trial_dir / "model.pt", result.model, meta)
    gt: dict[str, Any] = {}
    if sp.gt_metrics:
        from ..stages.evaluate import run_evaluate

        # No random-encoder baseline per trial: it is the same network, data and seed for
        # every trial (on a GPU its DCI alone took longer than a short trial's training).
        eval_params = dataclasses.replace(
            p,
            eval=dataclasses.replace(
                p.eval, metrics=tuple(sp.gt_metrics), few_label=False, random_baseline=()
            ),
        )
        try:
            metrics = run_evaluate(
                eval_params, prepared, result.model, trial_dir, progress=False, tracker=run.tracker
            )
            gt = {k: v for k, v in metrics["summary"].items() if v is not None}
        except Exception as e:  # beside the objective: never fails the trial
            log.warning("trial %d: ground-truth metrics failed: %s", run.number, e)
            gt = {"error": f"{type(e).__name__}: {e}"[:500]}
    write_json(
        trial_dir / "trial.json",
        {
            "study": ctx.study_name,
            "trial": run.number,
            "params": run.trial.params,
            "model": p.model.name,
            "values": list(values),
            "objectives": list(sp.objectives),
            "gt": gt,
            "steps": result.steps,
        },
    )
    run.tracker.log_artifact(model_path, "model")
    run.tracker.log_metrics(
        {f"objective/{n}": v for n, v in zip(sp.objectives, values, strict=True)}
    )
    run.trial.set_user_attr("gt", gt)
    run.trial.set_user_attr("steps", result.steps)
    run.trial.set_user_attr("model_path", str(model_path.resolve()))
    _finish(ctx, run, "COMPLETE", values=values)


def budget_for(
    params: Params, n_trials: int | None, worker_id: str | None, dims: Sequence[Dimension]
) -> Budget:
    sp = params.search
    grid = grid_size(dims) if sp.sampler == "grid" else None
    if n_trials is None:
        return Budget(sp.n_trials, "study", grid=grid)
    return Budget(n_trials, "worker" if worker_id else "call", worker=worker_id, grid=grid)
