"""A study in MLflow: one parent run per study, a nested run per model, the tables on the parent.

- Parent (``study-<name>-<preset>``): params = the resolved definition (``study.*``) and the base
  parameters; tags ``semidisent.stage=study``, ``study``, ``study.preset``, ``study.digest``,
  ``study.models_planned`` / ``study.models_done``, and one ``verdict.<cell>.<arm>-<ref>.<metric>``
  per paired comparison; metrics = the summary and paired tables (``summary.<cell>.<arm>.<metric>
  .mean``, ``paired.<cell>.<arm>-<ref>.<metric>.mean_diff`` ...); artifacts = the tables,
  results.json, results.md and the pictures. Its id is kept in ``mlflow_parent.json``: a resumed
  study continues the same run.
- Nested run per model (``<arm>/<cell>/s<S>-t<T>``), created when the model is done, from its
  files: params (train, model, its family's section, data, supervision, eval), tags
  (``study.arm``, ``study.baseline``, ``study.cell``, ``study.n_labels``, ``study.labeller``,
  ``study.beta``, ``study.supervision_seed``, ``study.training_seed``, ``study.status``: group
  and sort on them in ``mlflow ui``), the training curves, every score of metrics.json, the
  pictures and the model file. Its id is written to the model's ``mlflow_run.json`` before
  anything is logged, so a study killed while logging continues the same run instead of making a
  second one.

Written by one process (the orchestrator, or a Kubeflow pod for its own unit), so a local sqlite
store never sees two writers. Tracking never stops a study: a problem is logged and the study
goes on (the tracker's backlog keeps what could not be sent).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..artifacts.hashing import write_json
from ..errors import SemidisentError
from ..tracking.base import Tracker
from .definition import Study
from .runner import done_record, model_dir, read_json

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent.json"
RUN_FILE = "mlflow_run.json"
TABLES = ("models.csv", "summary.csv", "paired.csv", "selection.csv", "results.json", "results.md")


def _uri(study: Study) -> str:
    from ..tracking.factory import resolve_tracking_uri

    return resolve_tracking_uri(study.base_params.tracking)


def numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numbers of a nested mapping as MLflow metric names (``mig.discrete_mig``; ':' is
    not allowed in a name)."""
    out: dict[str, float] = {}
    for k, v in values.items():
        key = f"{prefix}{k}".replace(":", "_")
        if isinstance(v, Mapping):
            out.update(numbers(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def open_parent(study: Study, out: Path) -> tuple[str | None, Tracker | None]:
    """The study's parent run (created, or continued after a kill): (run id, open tracker)."""
    tp = study.base_params.tracking
    if not tp.enabled:
        return None, None
    from ..tracking.factory import open_tracker

    # The file keeps the URI redacted (it may carry a password); compare like with like.
    uri = _redacted(_uri(study))
    info = read_json(out / PARENT_FILE) or {}
    same = info.get("study_digest") == study.digest and info.get("tracking_uri") == uri
    try:
        if same:
            tracker = open_tracker(
                tp, run_id=info["run_id"], backlog_path=out / "tracking" / "parent.jsonl"
            )
            return info["run_id"], tracker
        d = study.definition
        tracker = open_tracker(
            tp,
            run_name=f"study-{study.label}",
            tags={
                "semidisent.stage": "study",
                "study": d.name,
                "study.preset": str(study.preset),
                "study.digest": study.digest,
                "study.models_planned": str(len(study.models)),
            },
            backlog_path=out / "tracking" / "parent.jsonl",
        )
    except (SemidisentError, ImportError) as e:  # tracking never stops a study
        log.warning("the study is not tracked: %s", e)
        return None, None
    definition = {k: v for k, v in study.document()["definition"].items() if k != "arms"}
    tracker.log_params(
        {
            "study": {
                **definition,
                "preset": study.preset,
                "arms": study.arms,
                "batch": study.batch,
            },
            **study.base_params.to_dict(),
        }
    )
    run_id = getattr(tracker, "run_id", None)
    write_json(
        out / PARENT_FILE, {"run_id": run_id, "tracking_uri": uri, "study_digest": study.digest}
    )
    return run_id, tracker


def _redacted(uri: str) -> str:
    from ..tracking.redact import redact_value

    return redact_value(uri)


def log_models(study: Study, out: Path, parent: str | None, model_ids: Iterable[str]) -> int:
    """A nested run for every done model not logged under ``parent`` yet; returns how many."""
    if parent is None:
        return 0
    n = 0
    for mid in model_ids:
        m = study.model(mid)
        record = done_record(out, m)
        if record is None:
            continue
        d = model_dir(out, m)
        info = read_json(d / RUN_FILE) or {}
        if info.get("parent") == parent and info.get("status") == "logged":
            continue
        try:
            _log_model(study, out, parent, m, record, info)
            n += 1
        except SemidisentError as e:
            log.warning("%s: not tracked: %s", mid, e)
    return n


def _log_model(
    study: Study, out: Path, parent: str, m: Any, record: dict[str, Any], info: dict[str, Any]
) -> None:
    from ..tracking.factory import open_tracker

    d = model_dir(out, m)
    tp = study.base_params.tracking
    run_id = info.get("run_id") if info.get("parent") == parent else None
    base = study.definition.baseline
    tags = {
        "semidisent.stage": "study-model",
        "study": study.definition.name,
        "study.preset": str(study.preset),
        "study.arm": m.arm,
        "study.baseline": "true" if m.arm == base else "false",
        "study.cell": m.cell.id,
        "study.n_labels": str(m.cell.n_labels),
        "study.labeller": m.cell.labeller,
        "study.beta": f"{m.params.train.beta:g}",
        "study.supervision_seed": str(m.supervision_seed),
        "study.training_seed": str(m.training_seed),
        "study.model_id": m.id,
        "study.status": str(record.get("status")),
    }
    tracker = open_tracker(
        tp,
        run_name=m.id,
        run_id=run_id,
        parent_run_id=parent,
        tags=tags,
        backlog_path=out / "tracking" / f"{m.id.replace('/', '__')}.jsonl",
    )
    # Recorded before anything is logged: a kill from here on continues this run.
    write_json(d / RUN_FILE, {"run_id": tracker.run_id, "parent": parent, "status": "open"})
    p = m.params
    own = p.method_params()
    params = {s: p.section(s) for s in ("train", "model", "data", "supervision", "eval")}
    if own is not None:
        params[p.model.name] = p.section(p.model.name)
    tracker.log_params(params)
    tracker.set_tags(tags)
    for point in read_json(d / "curves.json") or []:
        tracker.log_metrics(
            {f"train/{k}": v for k, v in point.items() if k != "step"}, step=int(point["step"])
        )
    metrics = read_json(d / "metrics.json") or {}
    tracker.log_metrics(numbers(metrics))
    stats = read_json(d / "train_stats.json") or {}
    tracker.log_metrics(
        numbers({k: stats.get(k) for k in ("wall_s", "steps_per_s", "steps")}, "train_stats.")
    )
    for name in ("metrics.json", "metrics_meta.json", "train_stats.json", "curves.json"):
        if (d / name).exists():
            tracker.log_artifact(d / name)
    if (d / "plots").is_dir():
        tracker.log_artifact(d / "plots", "plots")
    if (d / "model.pt").exists():
        tracker.log_artifact(d / "model.pt", "model")
    tracker.close("FINISHED" if record.get("status") == "completed" else "FAILED")
    write_json(d / RUN_FILE, {"run_id": tracker.run_id, "parent": parent, "status": "logged"})


def log_parent_results(
    study: Study,
    out: Path,
    tracker: Tracker | None,
    report: Mapping[str, Any],
    *,
    status: str | None = "FINISHED",
) -> None:
    """The aggregate tables and pictures on the parent run; ``status`` None leaves it running
    (a Kubeflow step that only creates it)."""
    if tracker is None:
        return
    metrics: dict[str, float] = {}
    tags = {"study.models_done": str(report.get("counts", {}).get("done", 0))}
    for row in report.get("summary", []):
        key = f"summary.{row['cell']}.{row['arm']}.{row['metric']}"
        metrics.update(
            numbers({k: row[k] for k in ("mean", "median", "std", "ci_low", "ci_high")}, key + ".")
        )
    for row in report.get("paired", []):
        key = f"paired.{row['cell']}.{row['arm']}-{row['reference']}.{row['metric']}"
        metrics.update(
            numbers(
                {k: row[k] for k in ("mean_diff", "ci_low", "ci_high", "p_wilcoxon", "n")},
                key + ".",
            )
        )
        tags[f"verdict.{row['cell']}.{row['arm']}-{row['reference']}.{row['metric']}"] = row[
            "verdict"
        ]
    for row in report.get("selection", []):
        key = f"selection.{row['cell']}.{row['arm']}.{row['metric']}"
        metrics.update(
            numbers({k: row[k] for k in ("regret", "random_regret", "spearman")}, key + ".")
        )
    tracker.log_metrics(metrics)
    tracker.set_tags(tags)
    for name in TABLES:
        if (out / name).exists():
            tracker.log_artifact(out / name, "study")
    if (out / "plots").is_dir():
        tracker.log_artifact(out / "plots", "study/plots")
    if status is not None:
        tracker.close(status)
    else:
        flush = getattr(tracker, "flush", None)
        if callable(flush):
            flush()
