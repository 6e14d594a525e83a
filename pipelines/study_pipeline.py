"""The study pipeline: only the wiring (the steps are ``components/study_components.py``).

study_init -> ParallelFor over the study's units (one GPU pod each: K models trained as one
batched run, evaluated, logged) -> study_report (tables, pictures, verdicts, MLflow parent).

The unit ids are the plan's, fixed at compile time (``semidisent study compile``); the resolved
study is the ``study_document`` parameter's default, and ``study_init`` refuses a document whose
plan differs from the compiled units (docs/study.md "Kubeflow").
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as objects.
import json
from collections.abc import Callable
from typing import Any

import semidisent_study_components as c  # loaded by semidisent.kfp_pipeline.study
from kfp import dsl

from semidisent.kfp_pipeline import k8s
from semidisent.kfp_pipeline.settings import ClusterSettings
from semidisent.kfp_pipeline.study import work_root
from semidisent.study.definition import Study

PIPELINE_NAME = "semidisent-study"


def build_pipeline(study: Study, settings: ClusterSettings, parallelism: int) -> Callable[..., Any]:
    """The ``@dsl.pipeline`` function of ``study``'s plan."""
    document = json.dumps(study.document(), sort_keys=True)
    units = [u.id for u in study.units]
    work = work_root(settings)
    s = settings

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"Study {study.label}: {len(study.models)} models in {len(units)} units "
        "(arms x labelled pools x seeds), paired comparisons against the baseline",
    )
    def semidisent_study(
        study_document: str = document, dvc_remote: str = "", data_version: str = ""
    ) -> None:
        init = c.study_init(study_document=study_document, units=json.dumps(units))
        k8s.cpu_task(init.set_display_name("study: check + MLflow parent run"), s)
        # Unnamed loop: a named ParallelFor breaks dsl.Collected on the backend (kfp#13239).
        with dsl.ParallelFor(items=units, parallelism=parallelism) as unit:
            run = c.study_unit(
                study=init.outputs["study"],
                unit=unit,
                work_root=work,
                dvc_remote=dvc_remote,
                data_version=data_version,
            )
            k8s.gpu_task(run.set_display_name("study unit"), s)
        rep = c.study_report(
            study=init.outputs["study"], units=dsl.Collected(run.outputs["results"])
        )
        k8s.cpu_task(rep.set_display_name("study: tables + verdicts"), s)

    return semidisent_study
