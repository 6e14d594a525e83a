"""The Kubeflow components of the study pipeline (pipelines/study_pipeline.py): thin wrappers over
semidisent.kfp_pipeline.study, run in the project's image like components/semidisent_components.py.

- ``study_init``: the resolved study -> ``study`` (study.json + the MLflow parent run's id);
- ``study_unit``: one unit (K models batched on a GPU) -> ``results`` (its models' folders);
- ``study_report``: every unit's ``results`` -> the tables, pictures, results.md, verdicts.
"""

# No `from __future__ import annotations`: KFP reads the annotations as objects.
from typing import List  # noqa: UP035 (typing.List: what KFP's type parser knows)

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Output
from semidisent_components import COMPONENT


@dsl.component(**COMPONENT)
def study_init(study_document: str, units: str, study: Output[Artifact]) -> str:
    """Check the study (its plan must have the units compiled in, ``units``: a JSON list), write
    study.json and create the MLflow parent run every unit nests under. Returns the parent run's
    id ("" untracked)."""
    from semidisent.kfp_pipeline import study as st

    parent = st.init_study(study_document, study.path, units)
    study.metadata.update({"mlflow_parent_run_id": parent})
    return parent


@dsl.component(**COMPONENT)
def study_unit(
    study: Input[Artifact],
    unit: str,
    results: Output[Artifact],
    work_root: str = "",
    dvc_remote: str = "",
    data_version: str = "",
) -> str:
    """Prepare the unit's labelled pool, train its models as one batched run (resuming from the
    PVC when there is one), evaluate them and log their nested MLflow runs. Returns its counts
    (JSON)."""
    import json

    from semidisent.kfp_pipeline import study as st

    counts = st.run_unit(
        study.path,
        unit,
        results.path,
        work=work_root,
        dvc_remote=dvc_remote,
        data_version=data_version,
    )
    results.metadata.update(counts)
    return json.dumps(counts)


@dsl.component(**COMPONENT)
def study_report(
    study: Input[Artifact],
    units: Input[List[Artifact]],  # noqa: UP006
    results: Output[Artifact],
    results_md: Output[Markdown],
    metrics: Output[Metrics],
):
    """The study's tables (per arm, paired differences with verdicts, model selection), pictures
    and results.md from every unit's results; logged on the parent run."""
    import shutil

    from semidisent.kfp_pipeline import study as st

    result = st.report(study.path, [u.path for u in units], results.path)
    shutil.copyfile(f"{results.path}/results.md", results_md.path)
    for name, value in st.ui_metrics(result).items():
        metrics.log_metric(name, value)
