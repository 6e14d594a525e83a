"""The Optuna study of ``search``: storage, sampler, pruner, identity and worker liveness.

Only the search modules import optuna, and only inside functions, so that ``semidisent --help``,
parameter validation and the science modules never pay for it.

Storage. ``search.storage`` is an RDB URL: a sqlite file by default (a relative path is
resolved against the current directory), or PostgreSQL (``postgresql+psycopg2://...``) so that
workers on several machines share one study. The URL may carry a password: it is only ever
shown through :func:`semidisent.tracking.redact.redact_value`.

Identity. A study holds trials that are comparable: same space, objectives, trial length, fixed
train keys, model (its family unless searched), the fixed keys of the sections of the families
trials train, data and supervision. That identity is stored in the study's user attributes
when the study is created; a worker whose parameters differ is refused with every difference
named (as a training checkpoint is), instead of silently mixing incomparable trials. The
default study name contains ``{digest}``, a digest of the identity, so a changed configuration
simply gets a study of its own.

Baseline. Every study runs ``search.baseline_trials`` trials with ``replacement_rate = 0`` (the
semi-supervised baseline, no label replacement) first: enqueued once per study (TPE, random; the
other searched keys are sampled as usual), or, with the grid sampler, grid points with p = 0
visited first. A resumed or shared study counts the baseline trials it already holds (user
attribute ``baseline``) and adds only the missing ones.

Liveness. A worker killed mid-batch leaves its trials RUNNING. Two mechanisms put them back in
the queue (failed, and re-enqueued as WAITING copies with the same parameters, up to
``search.max_retries`` times; ``ask`` hands out WAITING trials first):

- heartbeats (Optuna's RDB heartbeat table): each worker records a heartbeat for its running
  trials every ``search.heartbeat_s`` seconds from a background thread; trials silent for three
  intervals are failed by any worker (``optuna.storages.fail_stale_trials``);
- on one machine, immediately: a trial whose owner process (host, pid, run token in the trial's
  user attributes) is no longer alive is failed at once by the next worker started there, so a
  rerun after a kill does not wait for the grace period.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.schema import Params, SearchParams
from ..config.validation import to_plain
from ..errors import SemidisentError
from ..tracking.redact import redact_value
from .space import BASELINE_KEY, MODEL_KEY, Dimension, parse_space

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# Grace period of the heartbeat, in intervals (Optuna's default is 2; a third absorbs a slow
# database or a long pause of the training process).
GRACE_INTERVALS = 3
STORAGE_ATTEMPTS = 5
IDENTITY_ATTR = "semidisent.identity"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
# Trial user attributes that say who runs a trial.
OWNER_KEYS = ("worker", "host", "pid", "owner")
# Set on trials this project fails on purpose (divergence, invalid combination): those count as
# finished; a FAIL without it is an interrupted trial that was re-queued.
FAILURE_ATTR = "failure"
# Set on the trials scheduled as the p = 0 baseline (search.baseline_trials).
BASELINE_ATTR = "baseline"


class SearchError(SemidisentError):
    """The study cannot be used (unreachable storage, other parameters, ...)."""


# ------------------------------------------------------------------------------ storage


def resolve_storage_url(url: str, cwd: str | Path | None = None) -> str:
    """A relative sqlite path made absolute against ``cwd`` (default: the current directory)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/"):
        return url
    path, sep, query = url[len(prefix) :].partition("?")
    if not path or path.startswith(":"):  # in-memory database
        return url
    absolute = (Path(cwd) if cwd is not None else Path.cwd()) / path
    return f"{prefix}{absolute.resolve().as_posix()}{sep}{query}"


def open_storage(sp: SearchParams) -> optuna.storages.RDBStorage:
    """The RDB storage of ``search.storage`` with heartbeats and re-queueing of stale trials."""
    import optuna

    url = resolve_storage_url(sp.storage)
    if url.startswith("sqlite"):
        Path(url[len("sqlite:///") :].partition("?")[0]).parent.mkdir(parents=True, exist_ok=True)
        # Several local workers share one file: wait for the lock instead of failing.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        # Long studies outlive idle connections (PostgreSQL restarts, NAT timeouts).
        engine_kwargs = {"pool_pre_ping": True}
    hb = sp.heartbeat_s
    for attempt in range(STORAGE_ATTEMPTS):
        with warnings.catch_warnings():
            # heartbeat_interval and the retry callback are marked experimental in Optuna 5.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=hb,
                    grace_period=GRACE_INTERVALS * hb if hb else None,
                    heartbeat_stale_trial_callback=retry_callback(sp) if hb else None,
                )
            except Exception as e:
                # Workers started together on a fresh database race to create its tables
                # ("table ... already exists"): the losers find them on the next attempt.
                text = str(e)
                racing = any(m in text for m in ("already exists", "UNIQUE", "duplicate"))
                if racing and attempt + 1 < STORAGE_ATTEMPTS:
                    time.sleep(0.2 + random.random())
                    continue
                raise SearchError(
                    f"cannot open the Optuna storage {redact_value(url)} "
                    f"({type(e).__name__}: {redact_value(text)[:300]}); check search.storage"
                ) from None
    raise AssertionError("unreachable")


def retry_callback(sp: SearchParams) -> Callable[[optuna.Study, Any], None]:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # The copy keeps the reported intermediate values: a re-queued batch that resumes its
        # checkpoint past a rung does not report that rung again.
        return optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=sp.max_retries, inherit_intermediate_values=True
        )


# ------------------------------------------------------------------------------ sampler, pruner


def worker_seed(seed: int, worker_id: str | None, n_existing: int) -> int:
    """The sampler seed of one worker call: reproducible for a fresh single-worker study, but
    different per worker and after a resume (a restarted seeded sampler would otherwise draw
    the same parameters as the trials it already ran)."""
    if worker_id is None and n_existing == 0:
        return seed
    return zlib.crc32(f"{seed}:{worker_id}:{n_existing}".encode()) & 0x7FFFFFFF


def make_sampler(
    sp: SearchParams, dims: Sequence[Dimension], seed: int
) -> optuna.samplers.BaseSampler:
    import optuna

    if sp.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sp.sampler == "grid":
        return _grid_sampler(sp, dims, seed)
    # constant_liar: trials asked together in one batch see each other as (pessimistic) running
    # results, so a batch spreads out instead of sampling K near-identical points.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=sp.n_startup_trials,
            constant_liar=True,
            multivariate=True,
        )


def _grid_sampler(
    sp: SearchParams, dims: Sequence[Dimension], seed: int
) -> optuna.samplers.BaseSampler:
    import optuna

    target = baseline_target(sp, dims)

    class BatchGridSampler(optuna.samplers.GridSampler):
        """Optuna's GridSampler, with three changes for batches, workers and the baseline:

        - the grid's order is shuffled with ``search.seed`` alone: a trial's ``grid_id`` indexes
          that order, so every worker and resumed call must share it (with a per-worker seed,
          ids of different workers name different points and points are run twice);
        - each trial takes a point not yet finished or running, picked at random with this
          worker's seed (fewer collisions between workers asking at the same moment), grid
          points with p = 0 first until the study holds ``baseline_trials`` baseline trials;
        - no ``study.stop()`` when the grid is used up (allowed only inside ``optimize``): with
          ask-and-tell, the budget (capped at the grid) stops.
        """

        def __init__(self) -> None:
            super().__init__({d.name: d.grid_values() for d in dims}, seed=sp.seed)
            self._pick = random.Random(seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            # A re-queued copy (its grid_id) or an enqueued trial (its fixed params): as is.
            if "grid_id" in trial.system_attrs or "fixed_params" in trial.system_attrs:
                return
            free = self._get_unvisited_grid_ids(study)
            if not free:  # the budget prevents it; Optuna re-runs a point with a warning
                super().before_trial(study, trial)
                return
            baseline = False
            if target and BASELINE_KEY in self._param_names:
                col = self._param_names.index(BASELINE_KEY)
                zero = [i for i in free if self._all_grids[i][col] == 0]
                have = baseline_trials(study._storage.get_all_trials(study._study_id))
                if zero and len(have) < target:
                    free, baseline = zero, True
            grid_id = self._pick.choice(sorted(free))
            storage = study._storage
            storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
            storage.set_trial_system_attr(trial._trial_id, "grid_id", grid_id)
            if baseline:
                storage.set_trial_user_attr(trial._trial_id, BASELINE_ATTR, True)
                trial.user_attrs[BASELINE_ATTR] = True  # the asked Trial's cached copy

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return BatchGridSampler()


# ------------------------------------------------------------------------------ baseline


def baseline_target(sp: SearchParams, dims: Sequence[Dimension]) -> int:
    """Baseline trials a study should hold: ``search.baseline_trials`` (at most
    ``search.n_trials``) when the replacement rate is searched, else 0 (the fixed
    train.replacement_rate is then every trial's rate)."""
    if not any(d.name == BASELINE_KEY for d in dims):
        return 0
    return min(sp.baseline_trials, sp.n_trials)


def _interrupted(t: Any) -> bool:
    return t.state.name == "FAIL" and not t.user_attrs.get(FAILURE_ATTR)


def baseline_trials(trials: Iterable[Any]) -> list[Any]:
    """The study's scheduled baseline trials, by number: waiting, running or finished (an
    interrupted one is not counted: its re-queued copy is, or, retries used up, it is missing)."""
    out = [t for t in trials if t.user_attrs.get(BASELINE_ATTR) and not _interrupted(t)]
    return sorted(out, key=lambda t: t.number)


def enqueue_baseline_trials(study: optuna.Study, sp: SearchParams) -> list[int]:
    """Enqueue the study's missing p = 0 baseline trials (TPE and random samplers; the grid
    sampler visits p = 0 points first instead); returns the numbers this call added.

    Idempotent: a resumed study, or a worker joining a shared one, counts the baseline trials
    already there. Workers that start at the same moment may both enqueue; each then turns its
    own surplus (beyond the first ``baseline_trials`` by number) back into ordinary trials.
    """
    import optuna

    dims = parse_space(sp.space, sp.sampler)
    target = baseline_target(sp, dims)
    if sp.sampler == "grid" or target == 0:
        return []
    missing = target - len(baseline_trials(study.get_trials(deepcopy=False)))
    if missing <= 0:
        return []
    token = uuid.uuid4().hex[:12]
    for _ in range(missing):
        study.enqueue_trial(
            {BASELINE_KEY: 0.0}, user_attrs={BASELINE_ATTR: True, "enqueued_by": token}
        )
    storage = study._storage
    kept = baseline_trials(study.get_trials(deepcopy=False))
    added = []
    for rank, t in enumerate(kept):
        if t.user_attrs.get("enqueued_by") != token:
            continue
        if rank < target:
            added.append(t.number)
        elif t.state == optuna.trial.TrialState.WAITING:  # another worker's came first
            storage.set_trial_system_attr(t._trial_id, "fixed_params", {})
            storage.set_trial_user_attr(t._trial_id, BASELINE_ATTR, False)
    if added:
        log.info("study %s: p = 0 baseline trials %s enqueued", study.study_name, added)
    return added


def rung_steps(sp: SearchParams) -> list[int]:
    """Training steps at which the objective is evaluated: ``reports`` evenly spaced, the last
    at ``steps``; a single one for multi-objective studies (Optuna cannot prune those)."""
    n = 1 if len(sp.objectives) > 1 else sp.reports
    steps = sorted({max(1, round(sp.steps * (i + 1) / n)) for i in range(n)})
    return steps


def make_pruner(sp: SearchParams) -> optuna.pruners.BasePruner:
    import optuna

    if sp.pruner == "median":
        # Only COMPLETE trials are compared; a batch's own members never prune each other.
        return optuna.pruners.MedianPruner(n_startup_trials=sp.n_startup_trials)
    if sp.pruner == "hyperband":
        rungs = rung_steps(sp)
        return optuna.pruners.HyperbandPruner(
            min_resource=rungs[0], max_resource=sp.steps, reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def distributions(dims: Sequence[Dimension]) -> dict[str, Any]:
    """Optuna distributions of the parsed space (ask-and-tell: defined before the trial)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for d in dims:
        if d.kind == "categorical":
            out[d.name] = CategoricalDistribution(list(d.choices))
        elif d.kind == "int":
            step = int(d.step) if d.step is not None else 1
            out[d.name] = IntDistribution(int(d.low), int(d.high), log=d.log, step=step)
        else:
            out[d.name] = FloatDistribution(float(d.low), float(d.high), log=d.log, step=d.step)
    return out


def grid_size(dims: Sequence[Dimension]) -> int:
    n = 1
    for d in dims:
        n *= len(d.grid_values())
    return n


# ------------------------------------------------------------------------------ identity


def study_identity(params: Params, content_sha256: str | None = None) -> dict[str, Any]:
    """What makes two trials comparable (``content_sha256``: the prepared data, when known)."""
    from ..config.schema import METHOD_SECTIONS
    from ..training.checkpoint import EXECUTION_KEYS

    sp = params.search
    dims = parse_space(sp.space, sp.sampler)
    searched = {d.name for d in dims}
    train = {
        k: v
        for k, v in to_plain(params.train).items()
        if k not in EXECUTION_KEYS and k not in searched
    }
    model = params.section("model")
    by_name = {d.name: d for d in dims}
    if MODEL_KEY in by_name:  # searched: the fixed model.name is no trial's
        del model["name"]
        families = list(by_name[MODEL_KEY].choices)
    else:
        families = [params.model.name]
    ident: dict[str, Any] = {
        "search": {
            # Parsed, so that `low: 1` and `low: 1.0` are the same space.
            "space": [to_plain(d) for d in dims],
            "objectives": list(sp.objectives),
            "directions": list(sp.directions),
            "steps": sp.steps,
            "reports": rung_steps(sp),
        },
        "train": train,
        "model": model,
        "data": params.section("data"),
        "supervision": params.section("supervision"),
        # The few-label objective's estimator settings and protocol (which labelled rows it
        # scores): trials scored under different protocols must not share a study.
        "eval": {
            "mode": params.eval.mode,
            "seed": params.eval.seed,
            "few_label_protocol": params.eval.few_label_protocol,
        },
    }
    # The fixed keys of the sections of the families trials train (their searched keys are in
    # the space). Families without a section add nothing: an s2vae study keeps its identity.
    for family in families:
        if family in METHOD_SECTIONS:
            ident[family] = {
                k: v for k, v in params.section(family).items() if f"{family}.{k}" not in searched
            }
    if content_sha256 is not None:
        ident["data.content_sha256"] = content_sha256
    return ident


def identity_digest(params: Params) -> str:
    payload = json.dumps(study_identity(params), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def study_name(params: Params) -> str:
    """``search.study_name`` with ``{digest}`` replaced (10 hex digits of the identity)."""
    name = params.search.study_name
    return name.replace("{digest}", identity_digest(params)[:10]) if "{digest}" in name else name


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    from ..training.checkpoint import identity_differences

    return [
        d.replace("in the checkpoint", "in the study") for d in identity_differences(saved, wanted)
    ]


def open_study(
    params: Params,
    storage: Any,
    *,
    content_sha256: str | None = None,
    sampler: Any = None,
    pruner: Any = None,
    create: bool = True,
) -> optuna.Study:
    """Create or load the study; refuse one made with other parameters."""
    import optuna

    # Optuna's own INFO lines ("A new study created ...") repeat what this module logs.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sp = params.search
    name = study_name(params)
    directions = list(sp.directions)
    try:
        if create:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                directions=directions,
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner
            )
    except KeyError:
        raise SearchError(
            f"no study {name!r} in {redact_value(storage.url)}: run `semidisent search` first"
        ) from None
    ident = study_identity(params, content_sha256)
    saved = study.user_attrs.get(IDENTITY_ATTR)
    stored_dirs = [d.name.lower() for d in study.directions]
    if stored_dirs != directions:
        raise SearchError(
            f"study {name!r} in {redact_value(storage.url)} optimises {stored_dirs}, not "
            f"{directions}: choose another search.study_name"
        )
    if saved is None:
        if create:
            study.set_user_attr(IDENTITY_ATTR, ident)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(sp.objectives))  # axis labels in optuna-dashboard
        return study
    if content_sha256 is None:  # summarising: the data hash is not known here
        saved = {k: v for k, v in saved.items() if k != "data.content_sha256"}
    diffs = _differences(saved, ident)
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise SearchError(
            f"study {name!r} in {redact_value(storage.url)} was made with other parameters "
            f"({shown}); its trials would not be comparable. Restore the parameters, or choose "
            "another search.study_name (a name with {digest} gets one study per configuration)"
        )
    return study


# ------------------------------------------------------------------------------ liveness


@dataclass(frozen=True)
class Owner:
    """Who runs a trial: the worker id, and the process (host, pid, a token per call)."""

    worker: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def attrs(self) -> dict[str, Any]:
        return {"worker": self.worker, "host": self.host, "pid": self.pid, "owner": self.token}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def is_orphan(trial: Any, me: Owner) -> bool:
    """A RUNNING trial whose owner process on this host is gone (or is a previous life of this
    very pid, e.g. pid 1 in a restarted container)."""
    a = trial.user_attrs
    if a.get("host") != me.host or a.get("owner") in (None, me.token):
        return False
    pid = a.get("pid")
    return isinstance(pid, int) and (pid == me.pid or not _pid_alive(pid))


def fail_and_requeue(study: optuna.Study, trial_ids: Iterable[int], retry: Callable) -> list[int]:
    """Fail RUNNING trials and re-enqueue copies (atomic: of racing workers one wins)."""
    import copy

    import optuna

    storage = study._storage
    done = []
    for tid in trial_ids:
        try:
            if storage.set_trial_state_values(tid, state=optuna.trial.TrialState.FAIL):
                done.append(tid)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    for tid in done:
        retry(study, copy.deepcopy(storage.get_trial(tid)))
    return done


def requeue_lost_trials(study: optuna.Study, me: Owner, retry: Callable) -> list[int]:
    """Fail and re-queue trials of dead workers: stale heartbeats anywhere, dead pids here."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    orphans = [t for t in running if is_orphan(t, me)]
    done = fail_and_requeue(study, [t._trial_id for t in orphans], retry)
    if done:
        numbers = [t.number for t in orphans if t._trial_id in done]
        log.warning("re-queued trials %s of a worker that is no longer running", numbers)
    return done


class Heartbeat:
    """Records a heartbeat for this worker's running trials from a daemon thread (so that long
    compilations or evaluations do not make them look dead); dies with the process."""

    def __init__(self, storage: Any, interval: int | None) -> None:
        self.storage = storage
        self.interval = interval
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval:
            self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self._thread.start()

    def add(self, trial_ids: Iterable[int]) -> None:
        ids = list(trial_ids)
        with self._lock:
            self._ids.update(ids)
        if self.interval:
            self._beat(ids)  # at once: a trial without any heartbeat is never considered stale

    def remove(self, trial_ids: Iterable[int]) -> None:
        with self._lock:
            self._ids.difference_update(trial_ids)

    def _beat(self, ids: Iterable[int]) -> None:
        for tid in ids:
            try:
                self.storage.record_heartbeat(tid)
            except Exception as e:  # a database hiccup must not kill the worker
                log.warning("heartbeat not recorded (%s)", redact_value(str(e))[:200])

    def _run(self) -> None:
        assert self.interval
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self._ids)
            self._beat(ids)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# ------------------------------------------------------------------------------ counting


def counts(trials: Sequence[Any], worker: str | None = None) -> dict[str, int]:
    """Trials by state; ``finished`` = complete + pruned + failed on purpose (interrupted
    trials that were re-queued are not counted: their copy will be)."""
    from optuna.trial import TrialState

    out = {"complete": 0, "pruned": 0, "failed": 0, "interrupted": 0, "running": 0, "waiting": 0}
    for t in trials:
        if worker is not None and t.user_attrs.get("worker") != worker:
            continue
        if t.state == TrialState.COMPLETE:
            out["complete"] += 1
        elif t.state == TrialState.PRUNED:
            out["pruned"] += 1
        elif t.state == TrialState.FAIL:
            out["failed" if t.user_attrs.get(FAILURE_ATTR) else "interrupted"] += 1
        elif t.state == TrialState.RUNNING:
            out["running"] += 1
        elif t.state == TrialState.WAITING:
            out["waiting"] += 1
    out["finished"] = out["complete"] + out["pruned"] + out["failed"]
    return out
