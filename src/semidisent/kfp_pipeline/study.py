"""The Kubeflow study pipeline: compile it, and what its components call inside their pods.

``semidisent study compile --preset paper --image ... --data-pvc ...`` plans the study on this
machine (models sharing a labelled pool and a structure grouped into one batched unit when the
pods have GPUs) and writes a pipeline that fans the units out over GPU pods
(``pipelines/study_pipeline.py``, components in ``components/study_components.py``):

1. ``study_init``: checks the resolved study (the ``study_document`` parameter, compiled in),
   writes ``study.json`` and creates the MLflow parent run, both in its ``study`` artifact;
2. ``ParallelFor`` over the unit ids (fixed at compile time, ``--parallel`` at once):
   ``study_unit`` prepares the unit's labelled pool, trains its K models as one batched run,
   evaluates them, logs their nested runs and publishes their folders as its ``results``;
3. ``study_report``: gathers every unit's results, writes the tables, pictures and results.md,
   and logs them on the parent run.

With ``--data-pvc`` the units work under ``/data/study/<digest>`` on the volume, so a retried pod
resumes its unit from its checkpoints (the work is keyed by the study's digest: another study
never picks them up); without it, a retried pod starts its unit over. Nothing here imports kfp
at module level (the component bodies call the functions below in the image).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..study.definition import Study, study_from_document
from .settings import ClusterSettings

STUDY_COMPONENTS_FILE = "components/study_components.py"
STUDY_PIPELINE_FILE = "pipelines/study_pipeline.py"
STUDY_COMPONENTS_MODULE = "semidisent_study_components"
STUDY_PIPELINE_MODULE = "semidisent_study_pipeline"
UNIT_RESULT_FILES = (
    "model.json",
    "done.json",
    "metrics.json",
    "metrics_meta.json",
    "train_stats.json",
    "curves.json",
    "trained.json",
    "mlflow_run.json",
    "plots",
)


# ------------------------------------------------------------------------------ compile


def _pipeline_module() -> Any:
    from .project import _import, components_module, project_root

    root = project_root()
    components_module()  # the shared COMPONENT settings live there
    _import(STUDY_COMPONENTS_MODULE, root / STUDY_COMPONENTS_FILE)
    return _import(STUDY_PIPELINE_MODULE, root / STUDY_PIPELINE_FILE)


def build_study_pipeline(
    study: Study, settings: ClusterSettings, parallelism: int = 4
) -> Callable[..., Any]:
    return _pipeline_module().build_pipeline(study, settings, parallelism)


def compile_study_pipeline(
    study: Study, settings: ClusterSettings, out: str | Path, parallelism: int = 4
) -> Path:
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_study_pipeline(study, settings, parallelism), str(out))
    return out


def work_root(settings: ClusterSettings) -> str:
    """Where units keep their state: on the PVC when there is one (resumable), else ""."""
    return f"{settings.data_mount.rstrip('/')}/study" if settings.data_pvc else ""


# ------------------------------------------------------------------------------ in the pods


def init_study(document: str, study_dir: str | Path, units: str = "") -> str:
    """Check the document (its plan must have the compiled ``units``, a JSON list: the pipeline's
    fan-out is fixed at compile time), write study.json and create the parent run (left running
    for the report step); returns its id ("" with tracking disabled)."""
    from ..study import tracking
    from ..study.definition import StudyError
    from ..study.runner import write_study_file

    study = study_from_document(json.loads(document))
    planned = [u.id for u in study.units]
    if units and json.loads(units) != planned:
        raise StudyError(
            "the study_document's plan has other units than this pipeline fans out (it was "
            "changed after compiling): compile the pipeline again with `semidisent study compile`"
        )
    out = Path(study_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_study_file(study, out)
    parent, tracker = tracking.open_parent(study, out)
    if tracker is not None:
        flush = getattr(tracker, "flush", None)
        if callable(flush):
            flush()
    return parent or ""


def run_unit(
    study_dir: str | Path,
    unit_id: str,
    results_dir: str | Path,
    *,
    work: str = "",
    dvc_remote: str = "",
    data_version: str = "",
) -> dict[str, Any]:
    """Train and evaluate one unit (resuming from ``work`` on a PVC), log its nested runs and
    publish its models' folders (and its pool's random-encoder reference) into ``results_dir``."""
    from ..study import runner, tracking
    from . import runtime as rt

    study_dir = Path(study_dir)
    study = runner.load_study_file(study_dir)
    unit = study.unit(unit_id)
    out = Path(work) / study.digest if work else rt.scratch("study")
    out.mkdir(parents=True, exist_ok=True)
    runner.write_study_file(study, out)
    rt.fetch_dvc_data(study.model(unit.models[0]).params, dvc_remote, data_version)
    runner.run_unit(study, out, unit_id, progress=False)
    runner.ensure_reference(study, out, unit.prepared_id)
    parent = (runner.read_json(study_dir / tracking.PARENT_FILE) or {}).get("run_id")
    tracking.log_models(study, out, parent, unit.models)
    results = Path(results_dir)
    for mid in unit.models:
        src = runner.model_dir(out, study.model(mid))
        rt.publish(src, results / "models" / mid, UNIT_RESULT_FILES)
    ref = runner.reference_file(out, unit.prepared_id)
    if ref.exists():
        (results / "reference").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ref, results / "reference" / ref.name)
    records = [runner.done_record(out, study.model(mid)) or {} for mid in unit.models]
    return {
        "unit": unit_id,
        "models": len(unit.models),
        "completed": sum(r.get("status") == "completed" for r in records),
    }


def report(
    study_dir: str | Path, unit_dirs: Iterable[str | Path], results_dir: str | Path
) -> dict[str, Any]:
    """The tables, pictures and results.md from the units' published results; logged on the
    parent run, which this step finishes."""
    from ..study import report as report_mod
    from ..study import tracking
    from ..study.runner import load_study_file, write_study_file

    study = load_study_file(Path(study_dir))
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_study_file(study, out)
    parent_file = Path(study_dir) / tracking.PARENT_FILE
    if parent_file.exists():
        shutil.copyfile(parent_file, out / tracking.PARENT_FILE)
    for unit in unit_dirs:
        for sub in ("models", "reference"):
            if (Path(unit) / sub).is_dir():
                shutil.copytree(Path(unit) / sub, out / sub, dirs_exist_ok=True)
    result = report_mod.aggregate(study, out)
    _, tracker = tracking.open_parent(study, out)
    tracking.log_parent_results(study, out, tracker, result)
    return result


def ui_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The paired mean differences and the counts, for the Kubeflow UI's scalar view."""
    out = {f"models.{k}": float(v) for k, v in result.get("counts", {}).items()}
    for r in result.get("paired", []):
        if r.get("mean_diff") is not None:
            out[f"{r['cell']}.{r['arm']}-{r['reference']}.{r['metric']}"] = float(r["mean_diff"])
    return out
