"""Run a study: prepare its labelled pools, train and evaluate every model, resume after a kill.

State lives on disk under the study's output folder (docs/study.md "Outputs and resume"):

```
study.json                 the resolved study (definition, preset, base params, batch mode)
prepared/<pool>/           one prepared artifact per labelled pool (n_labels, labeller, seed)
units/<unit>/checkpoints/  a unit's training checkpoints (removed once its models are saved)
models/<arm>/<cell>/s<S>-t<T>/   model.json, model.pt, train_stats.json, curves.json,
                           trained.json, metrics.json, metrics_meta.json, plots/, done.json
reference/<pool>.json      a random encoder's scores on that pool (what training must beat)
```

A model is *trained* when its ``trained.json`` names its identity (the digest of what determines
its weights), *done* when its ``done.json`` names its identity and its evaluation's. A rerun
skips done models, evaluates trained ones, and resumes a unit's training from its newest
checkpoint (bit-exact on a CPU: the trainer's guarantee, docs/training.md). A model whose folder
holds another identity (the definition changed) is started over.

Execution (``jobs``): 1 runs every unit in this process, one after another; N > 1 runs units as
N single-threaded worker processes side by side (``python -m semidisent.study.worker``), which
is how a 2-core CPU is used best (DESIGN.md "Performance principles"). Workers die with the
orchestrator (Linux ``PR_SET_PDEATHSIG``), and each holds its unit's lock while it runs, so a
resumed study never trains a unit twice at once. MLflow is written by the orchestrator alone
(study/tracking.py), after each unit: one writer, no sqlite contention.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts.hashing import write_json
from ..config.validation import to_plain
from ..errors import SemidisentError
from .definition import ModelSpec, Study, StudyError, Unit, eval_identity, study_from_document

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"
LOCK_WAIT_S = 60.0  # a worker killed with its orchestrator takes a moment to release its lock


# ------------------------------------------------------------------------------ paths, state


def model_dir(out: Path, m: ModelSpec) -> Path:
    return out / "models" / m.id


def prepared_dir(out: Path, prepared_id: str) -> Path:
    return out / "prepared" / prepared_id


def unit_dir(out: Path, unit: Unit) -> Path:
    return out / "units" / unit.id


def reference_file(out: Path, prepared_id: str) -> Path:
    return out / "reference" / f"{prepared_id}.json"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_trained(out: Path, m: ModelSpec) -> bool:
    d = model_dir(out, m)
    info = read_json(d / "trained.json")
    return (
        bool(info)
        and info.get("identity") == m.identity
        and (info.get("status") == "diverged" or (d / "model.pt").exists())
    )


def done_record(out: Path, m: ModelSpec) -> dict[str, Any] | None:
    info = read_json(model_dir(out, m) / "done.json")
    if not info or info.get("identity") != m.identity:
        return None
    if info.get("status") == "completed" and info.get("eval_identity") != m.eval_identity:
        return None
    return info


def unit_done(out: Path, study: Study, unit: Unit) -> bool:
    return all(done_record(out, study.model(mid)) is not None for mid in unit.models)


def _claim_model_dir(out: Path, m: ModelSpec) -> Path:
    """The model's folder, emptied when it holds another model (its definition changed)."""
    d = model_dir(out, m)
    info = read_json(d / "model.json")
    if info and info.get("identity") != m.identity:
        log.warning("%s: trained with other parameters before; starting it over", m.id)
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "model.json").exists():
        write_json(d / "model.json", model_description(m))
    return d


def model_labels(m: ModelSpec) -> dict[str, Any]:
    """What names a model in every table and record: its arm, cell and seeds."""
    return {
        "model_id": m.id,
        "arm": m.arm,
        "cell": m.cell.id,
        "n_labels": m.cell.n_labels,
        "labeller": m.cell.labeller,
        "beta": m.params.train.beta,
        "supervision_seed": m.supervision_seed,
        "training_seed": m.training_seed,
    }


def model_description(m: ModelSpec) -> dict[str, Any]:
    return {
        **model_labels(m),
        "prepared_id": m.prepared_id,
        "identity": m.identity,
        "eval_identity": m.eval_identity,
        "params": m.params.to_dict(),
    }


# ------------------------------------------------------------------------------ locks


@contextlib.contextmanager
def file_lock(path: Path, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """An exclusive lock held while the block runs (released by the kernel if the process
    dies); waits up to ``wait_s`` for a previous holder, then refuses with one line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise StudyError(
                        f"{what} is being run by another process (pid {holder}); wait for it "
                        "or stop it"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ data


def ensure_prepared(study: Study, out: Path, prepared_id: str, progress: bool = True) -> Path:
    """The labelled pool's prepared artifact (written once, atomically, then reused)."""
    path = prepared_dir(out, prepared_id)
    if (path / "manifest.json").exists():
        return path
    from ..stages.prepare import run_prepare

    first = next(m for m in study.models if m.prepared_id == prepared_id)
    with file_lock(out / "prepared" / f".{prepared_id}.lock", f"preparing {prepared_id}", 600):
        if not (path / "manifest.json").exists():
            log.info("preparing labelled pool %s", prepared_id)
            run_prepare(first.params, path, progress=progress)
    return path


# ------------------------------------------------------------------------------ one unit


def run_unit(study: Study, out: Path, unit_id: str, *, progress: bool = True) -> list[str]:
    """Train (or resume) and evaluate the unit's models that are not done; returns their ids."""
    unit = study.unit(unit_id)
    models = [study.model(mid) for mid in unit.models]
    with file_lock(unit_dir(out, unit) / "lock", f"study unit {unit.id}", LOCK_WAIT_S):
        todo = [m for m in models if done_record(out, m) is None]
        if not todo:
            return []
        for m in models:
            _claim_model_dir(out, m)
        pdir = ensure_prepared(study, out, unit.prepared_id, progress)
        from ..artifacts.prepared import load_prepared

        prepared = load_prepared(pdir, models[0].params)
        if not all(is_trained(out, m) for m in models):
            _train_unit(out, unit, models, prepared, progress)
        for m in todo:
            _evaluate_model(out, m, prepared, progress)
        return [m.id for m in todo]


def _train_unit(
    out: Path, unit: Unit, models: list[ModelSpec], prepared: Any, progress: bool
) -> None:
    """One batched run (or a single model), from the unit's newest checkpoint when there is one."""
    from ..methods.base import RunSpec
    from ..training import CheckpointError, NonFiniteLossError
    from ..training.trainer import GroupRun

    ckdir = unit_dir(out, unit) / "checkpoints"
    specs = [RunSpec(m.params.train, m.params.method_params()) for m in models]

    def build() -> GroupRun:
        return GroupRun(
            prepared,
            specs,
            list(range(len(models))),
            models[0].params.model,
            checkpoint_dir=ckdir,
            progress=progress,
        )

    try:
        group = build()
    except CheckpointError as e:  # made for other models: they are not these models'
        log.warning("unit %s: %s; starting over", unit.id, e)
        shutil.rmtree(ckdir, ignore_errors=True)
        group = build()
    log.info("unit %s: training %d model(s) from step %d", unit.id, len(models), group.s)
    failure = ""
    try:
        results = group.advance()
    except NonFiniteLossError as e:  # a single model (batched runs mask a diverged model)
        results = None
        failure = str(e)
    for j, m in enumerate(models):
        d = model_dir(out, m)
        if results is None or results[j].status == "diverged" or results[j].model is None:
            message = failure if results is None else results[j].message
            _write_diverged(d, m, message)
            continue
        _save_trained(d, m, results[j], prepared)
    shutil.rmtree(ckdir, ignore_errors=True)


def _save_trained(d: Path, m: ModelSpec, result: Any, prepared: Any) -> None:
    from ..models.io import save_model

    p = m.params
    own = p.method_params()
    meta = {
        "train": p.section("train"),
        "model": p.section("model"),
        **({p.model.name: to_plain(own)} if own is not None else {}),
        "data": p.section("data"),
        "content_sha256": prepared.data_hash,
        "mask_sha256": prepared.manifest["supervision"]["mask_sha256"],
        "steps": result.steps,
        "final_losses": result.stats.get("final_losses", {}),
        "device": result.stats.get("device"),
        "objective_state": result.objective_state,
        "supervised_factors": list(prepared.mask.factor_names),
        "study": {"model_id": m.id, "arm": m.arm, "cell": m.cell.id},
    }
    save_model(d / "model.pt", result.model, meta)
    write_json(d / "train_stats.json", {**result.stats, "content_sha256": prepared.data_hash})
    write_json(d / "curves.json", result.curves)
    # Last: what makes the model "trained" for a resumed study.
    write_json(d / "trained.json", {"identity": m.identity, "status": "completed"})


def _write_diverged(d: Path, m: ModelSpec, message: str) -> None:
    write_json(d / "trained.json", {"identity": m.identity, "status": "diverged"})
    write_json(
        d / "done.json",
        {
            "model_id": m.id,
            "identity": m.identity,
            "eval_identity": m.eval_identity,
            "status": "diverged",
            "message": message[:2000],
        },
    )
    log.warning("%s diverged: %s", m.id, message)


def _evaluate_model(out: Path, m: ModelSpec, prepared: Any, progress: bool) -> None:
    from ..stages.evaluate import run_evaluate

    d = model_dir(out, m)
    if read_json(d / "trained.json").get("status") == "diverged":
        return
    t0 = time.perf_counter()
    metrics = run_evaluate(m.params, prepared, d / "model.pt", d, progress=progress)
    stats = read_json(d / "train_stats.json") or {}
    write_json(
        d / "done.json",
        {
            "model_id": m.id,
            "identity": m.identity,
            "eval_identity": m.eval_identity,
            "status": "completed",
            "summary": metrics.get("summary", {}),
            "dci": metrics.get("dci", {}),
            "train": {
                k: stats.get(k)
                for k in ("steps", "wall_s", "steps_per_s", "resumed_from_step", "device")
            },
            "eval_s": round(time.perf_counter() - t0, 3),
        },
    )
    log.info("%s done: %s", m.id, _short(metrics.get("summary", {})))


def _short(summary: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, (int, float)))


def ensure_reference(study: Study, out: Path, prepared_id: str, progress: bool = False) -> None:
    """A random encoder's scores on the pool (eval.random_baseline metrics, seed = the first
    training seed): the floor a trained model must clear, one per pool (not per model)."""
    path = reference_file(out, prepared_id)
    metrics = tuple(study.base_params.eval.random_baseline)
    if not metrics:
        return
    first = next(m for m in study.models if m.prepared_id == prepared_id)
    seed = study.definition.training_seeds[0]
    p = dataclasses.replace(
        first.params,
        train=dataclasses.replace(first.params.train, seed=seed),
        eval=dataclasses.replace(first.params.eval, metrics=metrics, few_label=False, plots=False),
    )
    # Redone when its metrics, seed or evaluation settings (sample scale, mode) change.
    want = {"metrics": list(metrics), "seed": seed, "eval": eval_identity(p)}
    if (read_json(path) or {}).get("settings") == want:
        return
    from ..artifacts.prepared import load_prepared
    from ..stages.evaluate import RANDOM_ENCODER, run_evaluate

    pdir = ensure_prepared(study, out, prepared_id, progress)
    scratch = out / "reference" / f".{prepared_id}"
    scores = run_evaluate(p, load_prepared(pdir, p), RANDOM_ENCODER, scratch, progress=progress)
    shutil.rmtree(scratch, ignore_errors=True)
    write_json(path, {"settings": want, "summary": scores.get("summary", {})})


# ------------------------------------------------------------------------------ the study


@dataclass
class StudyRun:
    out: Path
    planned: int
    done: int
    diverged: int
    ran_now: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # unit: reason
    wall_s: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None


def write_study_file(study: Study, out: Path) -> None:
    write_json(out / STUDY_FILE, study.document())


def load_study_file(out: Path) -> Study:
    doc = read_json(out / STUDY_FILE)
    if doc is None:
        raise StudyError(f"{out / STUDY_FILE} is missing or unreadable: run `semidisent study run`")
    return study_from_document(doc)


def run_study(
    study: Study,
    out: str | Path,
    *,
    jobs: int | None = None,
    progress: bool = True,
    doc: str | Path | None = None,
) -> StudyRun:
    """Train, evaluate and aggregate everything not done yet; write the tables, pictures and
    (``doc``) the study's generated section of a Markdown page; track it in MLflow."""
    from . import tracking

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = jobs or study.definition.jobs
    with file_lock(out / ".study.lock", f"study in {out}"):
        write_study_file(study, out)
        parent, parent_tracker = tracking.open_parent(study, out)
        try:
            result = _run(study, out, jobs, progress, doc, parent, parent_tracker, t0)
        except BaseException:
            if parent_tracker is not None:
                parent_tracker.close("KILLED")
            raise
    if result.failed:
        raise StudyError(
            f"study {study.label}: {len(result.failed)} unit(s) failed ({result.failed[0]}); the "
            f"tables in {out} hold the {result.done} finished models; rerun to resume"
        )
    return result


def _run(
    study: Study,
    out: Path,
    jobs: int,
    progress: bool,
    doc: str | Path | None,
    parent: str | None,
    parent_tracker: Any,
    t0: float,
) -> StudyRun:
    from . import report as report_mod
    from . import tracking

    done_before = sum(done_record(out, m) is not None for m in study.models)
    pending = [u for u in study.units if not unit_done(out, study, u)]
    log.info(
        "study %s: %d of %d models done; %d unit(s) to run, %d at a time",
        study.label,
        done_before,
        len(study.models),
        len(pending),
        jobs,
    )
    # Every done model reaches MLflow, including those a kill left unlogged.
    tracking.log_models(study, out, parent, [m.id for m in study.models])
    for pid in dict.fromkeys(u.prepared_id for u in pending):
        ensure_prepared(study, out, pid, progress)
    ran, failed = _run_units(study, out, pending, jobs, progress, parent)
    for pid in dict.fromkeys(m.prepared_id for m in study.models):
        if (prepared_dir(out, pid) / "manifest.json").exists():
            ensure_reference(study, out, pid)
    _append_run_log(out, t0, jobs, ran)
    report = report_mod.aggregate(study, out)
    if doc is not None:
        report_mod.update_doc(doc, study, out, report)
    tracking.log_parent_results(
        study, out, parent_tracker, report, status="FAILED" if failed else "FINISHED"
    )
    records = [done_record(out, m) for m in study.models]
    return StudyRun(
        out=out,
        planned=len(study.models),
        done=sum(r is not None for r in records),
        diverged=sum(1 for r in records if r and r.get("status") == "diverged"),
        ran_now=ran,
        failed=failed,
        wall_s=time.perf_counter() - t0,
        report=report,
        parent_run_id=parent,
    )


RUN_LOG = "runs.jsonl"


def _append_run_log(out: Path, t0: float, jobs: int, ran: list[str]) -> None:
    """One line per `study run` call (its wall time up to the tables): a resumed study's total
    time is the sum of its calls'."""
    import platform
    import socket

    entry = {
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": round(time.perf_counter() - t0, 1),
        "jobs": jobs,
        "models_run": len(ran),
        "host": socket.gethostname(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    with (out / RUN_LOG).open("a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def _run_units(
    study: Study, out: Path, units: Sequence[Unit], jobs: int, progress: bool, parent: str | None
) -> tuple[list[str], list[str]]:
    from . import tracking

    ran: list[str] = []
    failed: list[str] = []
    if jobs <= 1:
        for u in units:
            try:
                ran += run_unit(study, out, u.id, progress=progress)
            except SemidisentError as e:  # the unit's own problem: the others still run
                failed.append(f"unit {u.id}: {e}")
                log.error("unit %s failed: %s", u.id, e)
                continue
            tracking.log_models(study, out, parent, u.models)
        return ran, failed
    queue: deque[Unit] = deque(units)
    workers = [_Worker(out, k) for k in range(min(jobs, len(queue)))]
    try:
        for w in workers:
            w.give(queue)
        while any(w.unit is not None for w in workers):
            busy = {w.proc.stdout.fileno(): w for w in workers if w.unit is not None}  # type: ignore[union-attr]
            ready, _, _ = select.select(list(busy), [], [], 1.0)
            for fd in ready:
                w = busy[fd]
                unit, ok, why = w.result()
                if w.proc.poll() is not None and queue:  # died: a fresh process takes over
                    workers[workers.index(w)] = w = _Worker(out, w.k)
                w.give(queue)  # first: the slot never waits for the bookkeeping below
                if ok:
                    ran += list(unit.models)
                    tracking.log_models(study, out, parent, unit.models)
                else:
                    failed.append(f"unit {unit.id}: {why}")
                    log.error("unit %s failed: %s", unit.id, why)
    except BaseException:
        for w in workers:  # Ctrl-C / SIGTERM: stop the workers too (checkpoints stay)
            w.stop()
        raise
    for w in workers:
        w.stop(wait=True)
    return ran, failed


class _Worker:
    """A single-threaded worker process fed unit ids on its stdin (study/worker.py)."""

    def __init__(self, out: Path, k: int) -> None:
        self.k = k
        self.unit: Unit | None = None
        self.log_path = out / "units" / f"worker-{k}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Single-threaded: side by side on a small CPU, two-threaded processes stall on OpenMP
        # barriers (DESIGN.md "Performance principles").
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "semidisent.study.worker", "--out", str(out)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=logf,
                text=True,
                bufsize=1,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    def give(self, queue: deque[Unit]) -> None:
        """The next unit, or end of input (the process exits) when there is none."""
        assert self.proc.stdin is not None
        self.unit = queue.popleft() if queue else None
        try:
            if self.unit is not None:
                self.proc.stdin.write(self.unit.id + "\n")
                self.proc.stdin.flush()
            else:
                self.proc.stdin.close()
        except (BrokenPipeError, OSError):  # died: result() reports it
            pass

    def result(self) -> tuple[Unit, bool, str]:
        assert self.unit is not None and self.proc.stdout is not None
        unit = self.unit
        line = self.proc.stdout.readline()
        if not line:  # the process ended without answering
            self.proc.wait()
            return unit, False, f"worker exited ({self.proc.returncode}): {_tail(self.log_path)}"
        word, _, rest = line.strip().partition(" ")
        if word == "done":
            return unit, True, ""
        return unit, False, rest.partition(" ")[2] or rest

    def stop(self, wait: bool = False) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()
        if not wait:
            with contextlib.suppress(OSError):
                self.proc.terminate()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=30)


def _die_with_parent() -> None:  # pragma: no cover (runs in the child before exec)
    """Linux: the worker gets SIGKILL when the orchestrator dies (a killed study leaves no
    worker training behind; the resumed study trains the unit from its checkpoint)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the orchestrator died before prctl took effect
        os._exit(1)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:])[-600:] or "no output"
