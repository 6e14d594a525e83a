"""The semidisent pipeline: only the wiring (the steps are ``components/``).

validate params -> prepare -> search: init, ParallelFor workers, summary -> train the best
configuration at full budget (GPU) -> evaluate -> report + register in MLflow.

Its parameters mirror params.yaml: one typed pipeline parameter per key, ``section__name``
(``train__beta``, ``tracking__uri``, ...), with the defaults of the params file it is compiled
from, plus ``dvc_remote`` and ``data_version`` (where the data comes from). Cluster settings
(image, GPUs, secrets, PVC, number of search workers) are fixed at compile time
(:class:`semidisent.kfp_pipeline.settings.ClusterSettings`).

Caching: every step with side effects (study, trials, MLflow runs, the registered model) and the
first step (it checks the pods' configuration, and takes the run id) run every time; prepare,
fed with the data parameters only, is reused across runs with the same data.
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as objects.
import inspect
from collections.abc import Callable
from typing import Any

import semidisent_components as c  # loaded by semidisent.kfp_pipeline.project
from kfp import dsl

from semidisent.config.schema import Params
from semidisent.kfp_pipeline import k8s
from semidisent.kfp_pipeline.image import source_text
from semidisent.kfp_pipeline.parameters import pipeline_parameters
from semidisent.kfp_pipeline.settings import ClusterSettings

PIPELINE_NAME = "semidisent"
# Pipeline parameters that are not params.yaml keys: the DVC remote (s3://bucket/path, "" for
# none) and the data version in it: the md5 of the official dataset file as its .dvc file
# records it ("" = use data.path as it is, or the embedded procedural data when it is null).
EXTRA_PARAMETERS = {"dvc_remote": "", "data_version": ""}


def build_pipeline(params: Params, settings: ClusterSettings) -> Callable[..., Any]:
    """The ``@dsl.pipeline`` function, its parameters' defaults taken from ``params``."""
    spec = pipeline_parameters(params)
    validate_params = c.validate_params(spec)
    s = settings

    def semidisent(*args: Any) -> Any:
        # KFP calls the function with one channel per parameter, in signature order.
        a = dict(zip([p.name for p in spec] + list(EXTRA_PARAMETERS), args, strict=True))
        checked = validate_params(
            **{p.name: a[p.name] for p in spec},
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        ).set_display_name("validate params")
        # The search's secret too: the first step checks the study storage the pods will use.
        k8s.no_cache(k8s.cpu_task(checked, s, search=True))
        params_file = checked.outputs["params"]

        prep = c.prepare(
            data_params=checked.outputs["Output"],
            dvc_remote=a["dvc_remote"],
            data_version=a["data_version"],
        )
        k8s.cpu_task(prep.set_display_name("prepare"), s).set_caching_options(True)
        dataset = prep.outputs["dataset"]

        init = c.search_init(
            params=params_file,
            content_sha256=prep.outputs["Output"],
            workers=s.search_workers,
        )
        k8s.no_cache(k8s.cpu_task(init.set_display_name("search: create study"), s, search=True))
        # The workers take nothing from `init` but its completion (.after): kfp.local hands a
        # task's parameter output inside a ParallelFor over as the loop item (a kfp 2.17 bug).
        # Unnamed loop: a named ParallelFor breaks dsl.Collected on the backend (kfp#13239).
        with dsl.ParallelFor(
            items=list(range(s.search_workers)), parallelism=s.search_workers
        ) as w:
            worker = c.search_worker(params=params_file, dataset=dataset, worker=w).after(init)
            k8s.no_cache(k8s.gpu_task(worker.set_display_name("search worker"), s, search=True))
        summary = c.search_summary(params=params_file, workers=dsl.Collected(worker.output))
        # Reads the study (state outside its inputs): never reused.
        k8s.no_cache(k8s.cpu_task(summary.set_display_name("search: summary"), s, search=True))

        fit = c.train(
            params=params_file,
            dataset=dataset,
            study=summary.outputs["study"],
            checkpoint_root=s.checkpoint_root,
        )
        k8s.no_cache(k8s.gpu_task(fit.set_display_name("train best config"), s))

        ev = c.evaluate(dataset=dataset, model=fit.outputs["model"])
        k8s.no_cache(k8s.gpu_task(ev.set_display_name("evaluate"), s))

        rep = c.report(model=fit.outputs["model"], evaluation=ev.outputs["evaluation"])
        k8s.no_cache(k8s.cpu_task(rep.set_display_name("report + register"), s))
        return rep.outputs["Output"]  # the registered model: models:/<name>/<version>

    semidisent.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                p.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=p.default,
                annotation=p.annotation,
            )
            for p in spec
        ]
        + [
            inspect.Parameter(
                name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value, annotation=str
            )
            for name, value in EXTRA_PARAMETERS.items()
        ],
        return_annotation=str,
    )
    built = f"; compiled from {source_text(s.source)}" if s.source else ""
    return dsl.pipeline(
        name=PIPELINE_NAME,
        description="Semi-supervised disentanglement: prepare -> search (Optuna, ParallelFor) "
        "-> train best config -> evaluate -> register in MLflow. Compiled for Kubeflow "
        f"Pipelines backend {s.kfp_backend}{built}",
    )(semidisent)
