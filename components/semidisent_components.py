"""The Kubeflow components of semidisent: thin wrappers over the package's stage functions.

Each one is a lightweight Python component: KFP embeds the function's source in the pipeline
spec and runs it in the project's image (components/Dockerfile), where ``semidisent`` is
installed, so every body only imports the package and calls a stage. The same functions run
under ``kfp.local`` (``semidisent pipeline run-local``) with this machine's interpreter.

Artifacts between steps (typed, so the Kubeflow UI knows how to show them):

- ``params`` (Artifact): the validated params.yaml of the run, read by every step;
- ``dataset`` (Dataset): the prepared artifact (images, factors, supervision masks);
- ``study`` (Artifact) + ``search_page`` (HTML) + Metrics: the search summary;
- ``model`` (Model): model.pt + its statistics, curves, params and MLflow run id;
- ``evaluation`` (Artifact) + Metrics: metrics.json and the pictures;
- ``report_html`` (HTML) / ``report_md`` (Markdown): the experiment report.

Heavy imports (torch, mlflow, optuna) stay inside the bodies: KFP executes nothing else, and
importing this file to compile the pipeline must stay fast.
"""

# No `from __future__ import annotations`: KFP reads the annotations as objects.
import linecache
from collections.abc import Callable
from typing import Any, List  # noqa: UP035 (see search_summary)

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from semidisent.kfp_pipeline.parameters import PipelineParameter, params_component_source
from semidisent.kfp_pipeline.settings import DEFAULT_IMAGE

# Every task's image is set again from the cluster settings at compile time
# (kfp_pipeline.k8s.common); this is only the decorator's required default. The image has kfp
# installed (the [pipeline] extra), so KFP must not pip-install it in the pod (no registry
# access needed at run time).
COMPONENT = {"base_image": DEFAULT_IMAGE, "install_kfp_package": False}


@dsl.component(**COMPONENT)
def prepare(
    params: Input[Artifact],
    dataset: Output[Dataset],
    dvc_remote: str = "",
    data_version: str = "",
):
    """Dataset + supervision masks -> the prepared artifact (semidisent.stages.prepare)."""
    from semidisent.kfp_pipeline import runtime as rt
    from semidisent.stages.prepare import run_prepare

    p = rt.fetch_dvc_data(rt.read_params(params.path), dvc_remote, data_version)
    run_prepare(p, dataset.path, progress=False)
    dataset.metadata.update(rt.prepared_metadata(dataset.path))


@dsl.component(**COMPONENT)
def search_init(params: Input[Artifact], dataset: Input[Dataset], workers: int) -> str:
    """Create the Optuna study (RDB storage) and its MLflow parent run before the workers start,
    so that parallel workers share both. Returns the study's name (shown in the UI)."""
    from semidisent.kfp_pipeline import runtime as rt
    from semidisent.stages.search import init_study

    p = rt.read_params(params.path, search=True)
    rt.check_shared_storage(p, workers)
    name, _ = init_study(p, content_sha256=rt.content_hash(dataset.path))
    return name


@dsl.component(**COMPONENT)
def search_worker(params: Input[Artifact], dataset: Input[Dataset], worker: int) -> str:
    """One ParallelFor worker: trains trials of the shared study until it holds search.n_trials
    finished trials (semidisent.stages.search.run_search). Returns its trial counts (JSON)."""
    import json

    from semidisent.kfp_pipeline import runtime as rt
    from semidisent.stages.search import run_search

    p = rt.read_params(params.path, search=True)
    out = rt.scratch("search")
    result = run_search(p, dataset.path, out, worker_id=rt.worker_id(p, worker), progress=False)
    return json.dumps({"worker": worker, "trials_run": len(result.trials_run), **result.counts})


@dsl.component(**COMPONENT)
def search_summary(
    params: Input[Artifact],
    workers: List[str],  # noqa: UP006 (typing.List: what KFP's type parser knows)
    study: Output[Artifact],
    search_page: Output[HTML],
    metrics: Output[Metrics],
):
    """The study's outputs from the storage alone (semidisent.stages.search.summarize_study):
    best_params.json for train, the trials table and plot, the counts as UI metrics."""
    from pathlib import Path

    from semidisent.kfp_pipeline import runtime as rt
    from semidisent.stages.search import summarize_study

    p = rt.read_params(params.path, search=True)
    result = summarize_study(p, study.path, register=False)
    rt.log_metrics(metrics, result.summary)
    Path(search_page.path).write_text(rt.search_html(study.path))
    study.metadata.update({"study": result.study, "best_trial": result.best_trial})


@dsl.component(**COMPONENT)
def train(
    params: Input[Artifact],
    dataset: Input[Dataset],
    study: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    checkpoint_root: str = "",
):
    """The best configuration of the search at the full budget (train.steps), on a GPU
    (semidisent.stages.train.run_train_tracked). ``checkpoint_root`` (on the PVC): a retried
    pod resumes from its checkpoints and continues its MLflow run."""
    import json
    from pathlib import Path

    from semidisent.kfp_pipeline import runtime as rt
    from semidisent.stages.train import run_train_tracked

    p = rt.with_best(rt.read_params(params.path), study.path)
    work = rt.train_dir(p, checkpoint_root)
    run_train_tracked(p, dataset.path, work, progress=False, restart_on_change=True)
    rt.publish_model(p, work, model)
    stats = json.loads((Path(work) / "train_stats.json").read_text())
    rt.log_metrics(metrics, rt.train_metrics(stats))


@dsl.component(**COMPONENT)
def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
):
    """Disentanglement metrics and pictures of the model (semidisent.stages.evaluate), logged to
    the model's MLflow run; the scores as UI metrics."""
    from semidisent.kfp_pipeline import runtime as rt

    p = rt.read_params(model.path)  # the params the model was trained with (best config)
    work = rt.working_copy(model.path)
    scores = rt.evaluate_model(p, dataset.path, work, evaluation.path)
    rt.log_metrics(metrics, scores)


@dsl.component(**COMPONENT)
def report(
    model: Input[Model],
    evaluation: Input[Artifact],
    report_html: Output[HTML],
    report_md: Output[Markdown],
    registered: Output[Artifact],
) -> str:
    """Report (Markdown + HTML) and the model registered in MLflow with its metrics
    (semidisent.stages.report.run_report_tracked). Returns the registered model's URI."""
    import json
    import shutil

    from semidisent.kfp_pipeline import runtime as rt
    from semidisent.stages.report import run_report_tracked

    p = rt.read_params(model.path)
    out = rt.scratch("report") / "report"
    run_report_tracked(p, rt.working_copy(model.path), evaluation.path, out)
    rt.publish_report(out, report_html, report_md)
    info_file = out / "registered_model.json"
    if not info_file.exists():  # tracking.enabled = false: nothing registered
        return ""
    info = json.loads(info_file.read_text())
    shutil.copyfile(info_file, registered.path)
    registered.metadata.update(info)
    return str(info["model_uri"])


def validate_params(spec: list[PipelineParameter]) -> Callable[..., Any]:
    """The pipeline's first step: one input per params.yaml key -> params.yaml (validated).

    Its signature follows the params schema, so its source is generated
    (:func:`semidisent.kfp_pipeline.parameters.params_component_source`). KFP reads a
    component's source with ``inspect.getsource``, which finds exec'd code through linecache:
    the text is registered there under a unique pseudo file name.
    """
    source = params_component_source(spec)
    filename = f"<semidisent-generated-{abs(hash(source)):x}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"Output": Output, "Artifact": Artifact}
    exec(compile(source, filename, "exec"), namespace)
    return dsl.component(namespace["validate_params"], **COMPONENT)
