"""`semidisent search`: an Optuna study over train.* keys, model.name and the families' own keys,
trials trained in batches.

Writes into ``out_dir`` (docs/search.md):

- ``best_params.json``: ``{"train": {searched train keys of the best trial}, "model": {"name":
  its family}, "<family>": {its searched family keys}, "overrides": ["train.beta=..", ...],
  "values": [...], "trial": n, "study": name, ...}``;
- ``trials.csv``: one row per trial (number, state, objective values, parameters, the
  full-ground-truth metrics logged beside them, steps, worker, MLflow run);
- ``trials.png``: beta vs replacement rate coloured by the score, and the score against its
  ground-truth counterpart;
- ``search_summary.json`` (DVC metrics): best values, trial counts by state, selection quality;
- ``best_model.pt``: the best trial's model (when its file or MLflow run is reachable);
- ``trials/<number>/``: this worker's completed trials (model, metrics, pictures).

Several processes may run :func:`run_search` at once against one RDB storage (each asks and
tells its own trials); :func:`summarize_study` writes the outputs from the storage alone, for
a pipeline's last step after parallel workers. :func:`init_study` creates the study and its
MLflow parent run up front (the pipeline's first step), so that parallel workers share them.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts.hashing import write_json
from ..artifacts.prepared import load_prepared
from ..config.schema import Params
from ..errors import SemidisentError
from ..tracking.redact import redact_value

log = logging.getLogger(__name__)


@dataclass
class SearchSummary:
    study: str
    storage: str  # redacted
    objectives: list[str]
    directions: list[str]
    counts: dict[str, int]  # complete, pruned, failed, interrupted, running, waiting, finished
    best_trial: int | None
    best_values: list[float] | None
    best_train: dict[str, Any]
    # best_params.json: the best trial's keys by section (train, model, its family's) and as
    # -S overrides
    best_params: dict[str, Any] = field(default_factory=dict)
    trials_run: list[int] = field(default_factory=list)  # numbers this call finished
    parent_run_id: str | None = None
    registered: dict[str, Any] | None = None  # {"trial", "name", "version"}
    out_dir: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # search_summary.json
    # CUDA memory allocated after each rung this call trained (None on CPU): flat = nothing
    # re-uploaded or recaptured per rung.
    rung_memory: list[int | None] = field(default_factory=list)


def _tracking_uri(params: Params) -> str:
    from ..tracking.factory import resolve_tracking_uri

    return resolve_tracking_uri(params.tracking)


def init_study(
    params: Params,
    *,
    parent_run_id: str | None = None,
    content_sha256: str | None = None,
) -> tuple[str, str | None]:
    """Create (or load) the study and its MLflow parent run; returns (study name, parent run id).

    The parent run id is kept in the study's user attributes, so every worker that joins the
    study later nests its trials under the same run. Pass ``parent_run_id`` to nest the study
    under an existing run (e.g. a pipeline's).
    """
    from ..search.space import check_gamma_schedule
    from ..search.study import (
        PARENT_RUN_ATTR,
        enqueue_baseline_trials,
        open_storage,
        open_study,
        study_name,
    )

    check_gamma_schedule(params)
    storage = open_storage(params.search)
    study = open_study(params, storage, content_sha256=content_sha256)
    name = study_name(params)
    _note_baseline(params)
    enqueue_baseline_trials(study, params.search)
    parent = parent_run_id or study.user_attrs.get(PARENT_RUN_ATTR)
    if params.tracking.enabled and parent is None:
        from ..tracking.factory import open_tracker

        sp = params.search
        tracker = open_tracker(
            params.tracking,
            run_name=f"search-{name}",
            tags={
                "semidisent.stage": "search",
                "optuna.study": name,
                "optuna.storage": redact_value(sp.storage),
            },
        )
        tracker.log_params({**params.to_dict(), "search": {**params.section("search"),
                                                           "study_name": name}})  # fmt: skip
        parent = getattr(tracker, "run_id", None)
        tracker.close()
    if parent is not None and study.user_attrs.get(PARENT_RUN_ATTR) != parent:
        study.set_user_attr(PARENT_RUN_ATTR, parent)
    return name, parent


def _note_baseline(params: Params) -> None:
    """Say what search.baseline_trials does when the replacement rate is not searched."""
    from ..search.space import BASELINE_KEY

    sp, rate = params.search, params.train.replacement_rate
    if sp.baseline_trials and BASELINE_KEY not in sp.space and rate != 0:
        log.warning(
            "search.baseline_trials = %d is ignored: replacement_rate is not searched, so every "
            "trial uses train.replacement_rate = %s and the study has no p = 0 baseline (add "
            "replacement_rate to search.space to compare against it)",
            sp.baseline_trials,
            rate,
        )


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a pod being stopped) raises KeyboardInterrupt, so unfinished trials are put
    back in the queue at once instead of waiting for their heartbeats to go stale."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_search(
    params: Params,
    prepared_dir: str | Path,
    out_dir: str | Path,
    *,
    n_trials: int | None = None,
    worker_id: str | None = None,
    progress: bool = True,
    parent_run_id: str | None = None,
) -> SearchSummary:
    """Run (a share of) the study in ``params.search.storage``, then write the outputs.

    ``n_trials`` None: work until the study holds ``search.n_trials`` finished trials (shared
    with every other worker; a rerun after a kill only does what is missing). ``n_trials`` N:
    this worker's own budget: N trials tagged ``worker_id`` (a restarted worker with the same id
    only does the remainder), or N new trials when ``worker_id`` is None. 0 only creates the
    study and its parent run, and summarises.
    """
    from ..search.objective import SearchContext, budget_for, optimize, trials_per_batch
    from ..search.space import check_gamma_schedule, parse_space
    from ..search.study import (
        Heartbeat,
        Owner,
        make_pruner,
        make_sampler,
        open_storage,
        open_study,
        retry_callback,
        worker_seed,
    )

    if n_trials is not None and n_trials < 0:
        raise SemidisentError(f"--n-trials = {n_trials}: expected a number >= 0")
    sp = params.search
    dims = parse_space(sp.space, sp.sampler)
    check_gamma_schedule(params)  # before the data, the storage and any trial
    prepared = load_prepared(prepared_dir, params)
    from ..metrics.names import FEW_LABEL_NAMES

    if set(sp.objectives) & set(FEW_LABEL_NAMES):  # before the study and any trial
        from ..metrics.few_label import check_protocol

        check_protocol(prepared.mask, params.eval.few_label_protocol)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name, parent = init_study(
        params, parent_run_id=parent_run_id, content_sha256=prepared.data_hash
    )
    storage = open_storage(sp)
    study = open_study(params, storage, content_sha256=prepared.data_hash)
    existing = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(sp, dims, worker_seed(sp.seed, worker_id, existing))
    study.pruner = make_pruner(sp)
    owner = Owner(worker=worker_id or _default_worker())
    heartbeat = Heartbeat(storage, sp.heartbeat_s)
    ctx = SearchContext(
        params=params,
        prepared=prepared,
        study=study,
        study_name=name,
        dims=dims,
        out_dir=out,
        owner=owner,
        heartbeat=heartbeat,
        retry=retry_callback(sp),
        parent_run_id=parent,
        progress=progress,
    )
    budget = budget_for(params, n_trials, worker_id, dims)
    log.info(
        "study %s in %s: worker %s, budget %d trial(s) (%s), %d per batch",
        name,
        redact_value(storage.url),
        owner.worker,
        budget.n_trials,
        budget.scope,
        trials_per_batch(params),
    )
    try:
        with _sigterm_as_interrupt():
            optimize(ctx, budget, sp.timeout_s)
    finally:
        heartbeat.close()
    result = summarize_study(params, out, parent_run_id=parent, _study=study)
    result.trials_run = list(ctx.told)
    result.rung_memory = list(ctx.rung_memory)
    return result


def _default_worker() -> str:
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"


def summarize_study(
    params: Params,
    out_dir: str | Path,
    *,
    parent_run_id: str | None = None,
    register: bool = True,
    _study: Any = None,
) -> SearchSummary:
    """Write best_params.json, trials.csv, trials.png and search_summary.json from the study in
    the storage (no training); log them to the study's parent run and register the best trial's
    model (once per best trial)."""
    from ..search import results
    from ..search.space import parse_space
    from ..search.study import (
        PARENT_RUN_ATTR,
        counts,
        open_storage,
        open_study,
        study_name,
    )

    sp = params.search
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study = _study
    if study is None:
        study = open_study(params, open_storage(sp), create=False)
    name = study_name(params)
    dims = parse_space(sp.space, sp.sampler)
    view = results.StudyView(
        name=name,
        objectives=tuple(sp.objectives),
        directions=tuple(sp.directions),
        space=tuple(d.name for d in dims),
        log_axes=tuple(d.name for d in dims if d.log),
        fixed={a: getattr(params.train, a) for a in results.PLOT_AXES},
        gt_metrics=tuple(sp.gt_metrics),
        model_name=params.model.name,
    )
    trials = study.get_trials(deepcopy=False)
    c = counts(trials)
    rows = results.trial_rows(trials, view)
    results.write_csv(out / "trials.csv", rows, view)
    results.plot_trials(out / "trials.png", trials, view)
    summary = results.summary(trials, view, c)
    best = results.best_params(trials, view, sp.steps)
    write_json(out / "search_summary.json", summary)
    write_json(out / "best_params.json", best)
    parent = parent_run_id or study.user_attrs.get(PARENT_RUN_ATTR)
    registered = None
    best_trial = results.best_trial(trials, view.directions)
    if best_trial is not None:
        registered = _best_model(params, study, best_trial, out, register, best)
    if params.tracking.enabled and parent is not None:
        _log_to_parent(params, parent, out, summary, best)
    from ..search.study import resolve_storage_url

    storage_url = redact_value(resolve_storage_url(sp.storage))
    return SearchSummary(
        study=name,
        storage=storage_url,
        objectives=list(sp.objectives),
        directions=list(sp.directions),
        counts=c,
        best_trial=best["trial"],
        best_values=best["values"],
        best_train=best["train"],
        best_params=best,
        parent_run_id=parent,
        registered=registered,
        out_dir=out,
        summary=summary,
    )


def _log_to_parent(
    params: Params, parent: str, out: Path, summary: dict[str, Any], best: dict[str, Any]
) -> None:
    from ..tracking.factory import open_tracker
    from ..tracking.mlflow_tracker import flatten

    try:
        tracker = open_tracker(params.tracking, run_id=parent)
    except SemidisentError as e:
        log.warning("the study's parent run is not updated: %s", e)
        return
    numbers = {
        k: float(v)
        for k, v in flatten(summary).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    tracker.log_metrics(numbers)  # best.*, baseline.* (the best p = 0 trial), selection.*, ...
    tags = {f"best.{k}": str(v) for k, v in best["train"].items()}
    # the best trial's family and its family keys (best.model.name, best.s2_factor_vae.gamma)
    tags.update({f"best.{k}": v for k, v in _override_pairs(best) if not k.startswith("train.")})
    base = summary.get("baseline") or {}
    tags.update({f"baseline.{k}": str(v) for k, v in (base.get("params") or {}).items()})
    n = base.get("trial")
    tags["baseline"] = f"trial {n}" if n is not None else str(base.get("note", ""))
    tracker.set_tags(tags)
    for f in ("trials.csv", "trials.png", "best_params.json", "search_summary.json"):
        tracker.log_artifact(out / f, "search")
    tracker.close()


def _override_pairs(best: dict[str, Any]) -> list[tuple[str, str]]:
    """best_params.json's overrides as (params key, value text)."""
    return [
        (key, value) for key, _, value in (o.partition("=") for o in best.get("overrides") or [])
    ]


def _best_model(
    params: Params, study: Any, best: Any, out: Path, register: bool, best_params: dict[str, Any]
) -> dict[str, Any] | None:
    """Copy the best trial's model to best_model.pt (from this machine or its MLflow run) and
    register it, unless that trial is already the registered one."""
    run_id = best.user_attrs.get("mlflow_run_id")
    local = best.user_attrs.get("model_path")
    target = out / "best_model.pt"
    import socket

    # The path is the trial's own machine's: trust it only there.
    here = best.user_attrs.get("host") == socket.gethostname()
    if local and here and Path(local).exists():
        if Path(local).resolve() != target.resolve():
            shutil.copyfile(local, target)
    elif run_id and params.tracking.enabled:
        try:
            _download_model(params, run_id, target)
        except Exception as e:
            log.warning("best trial %d: model not downloadable (%s)", best.number, e)
            return None
    else:
        log.warning("best trial %d: its model is not on this machine", best.number)
        return None
    name = params.tracking.registered_model
    if not (register and params.tracking.enabled and name and run_id):
        return None
    done = study.user_attrs.get("registered_model")
    if isinstance(done, dict) and done.get("trial") == best.number:
        return done
    from ..tracking.model_registry import log_and_register

    metrics = {
        **dict(zip(params.search.objectives, best.values, strict=True)),
        "gt": best.user_attrs.get("gt") or {},
        "trial": best.number,
    }
    try:
        family = (best_params.get("model") or {}).get("name", params.model.name)
        reg = log_and_register(
            _tracking_uri(params),
            run_id,
            target,
            name,
            metrics,
            description=f"best trial {best.number} of Optuna study {study.study_name} "
            f"(model.name {family})",
            # what reproduces it: its family and searched keys (model.name, train.beta, ...)
            tags=dict(_override_pairs(best_params)),
        )
    except Exception as e:  # tracking never fails the search
        log.warning("best model not registered: %s", redact_value(str(e))[:300])
        return None
    info = {"trial": best.number, "name": reg.name, "version": reg.version, "uri": reg.model_uri}
    study.set_user_attr("registered_model", info)
    return info


def _download_model(params: Params, run_id: str, target: Path) -> None:
    import tempfile

    from mlflow import MlflowClient

    from ..tracking.mlflow_tracker import _client_settings

    _client_settings()
    client = MlflowClient(tracking_uri=_tracking_uri(params))
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "model/model.pt", tmp)
        shutil.copyfile(path, target)
