"""The Kubeflow components of semidisent: thin wrappers over the package's stage functions.

Each one is a lightweight Python component: KFP embeds the function's source in the pipeline
spec and runs it in the project's image (components/Dockerfile), where ``semidisent`` is
installed, so every body only imports the package and calls a stage. The same functions run
under ``kfp.local`` (``semidisent pipeline run-local``) with this machine's interpreter.

Artifacts between steps (typed, so the Kubeflow UI knows how to show them):

- ``params`` (Artifact): the validated params.yaml of the run, read by every step;
- ``dataset`` (Dataset): the prepared artifact (images, factors, supervision masks; metadata:
  its hashes, ``dvc_remote`` and ``data_version``), made from the data parameters alone, so
  KFP's cache reuses it across runs with the same data;
- ``study`` (Artifact) + ``search_page`` (HTML) + Metrics: the search summary;
- ``model`` (Model): model.pt + its statistics, curves, params and MLflow run id;
- ``evaluation`` (Artifact) + Metrics: metrics.json and the pictures;
- ``report_html`` (HTML) / ``report_md`` (Markdown): the experiment report.

Heavy imports (torch, mlflow, optuna) stay inside the bodies: KFP executes nothing else, and
importing this file to compile the pipeline must stay fast. Every body runs inside
``rt.step(...)``: a set-up mistake ends the step with one line in its log, not a traceback.
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
    dataset: Output[Dataset],
    data_params: str = "",
    dvc_remote: str = "",
    data_version: str = "",
    params: Input[Artifact] = None,
) -> str:
    """Dataset + supervision masks -> the prepared artifact (semidisent.stages.prepare).

    ``data_params`` (validate params' output: the data and supervision sections) is all it
    reads, so its inputs carry no run id and KFP's cache reuses the dataset across runs with
    the same data (``params``, the whole params.yaml, is the older way in). Returns the data's
    content hash (what the study's identity needs, without downloading the dataset)."""
    from semidisent.kfp_pipeline import runtime as rt
    from semidisent.stages.prepare import run_prepare

    with rt.step("prepare"):
        p = rt.params_from_data(data_params) if data_params else rt.read_params(params.path)
        p = rt.fetch_dvc_data(p, dvc_remote, data_version)
        run_prepare(p, dataset.path, progress=False)
        dataset.metadata.update(rt.dataset_metadata(dataset.path, dvc_remote, data_version))
        return rt.content_hash(dataset.path)


@dsl.component(**COMPONENT)
def search_init(
    params: Input[Artifact],
    workers: int,
    content_sha256: str = "",
    dataset: Input[Dataset] = None,
) -> str:
    """Create the Optuna study (RDB storage) and its MLflow parent run before the workers start,
    so that parallel workers share both. ``content_sha256``: the data's hash (prepare's output;
    the dataset itself is not downloaded for it). Returns the study's name (shown in the UI)."""
    from semidisent.kfp_pipeline import runtime as rt
    from semidisent.stages.search import init_study

    with rt.step("search: create study"):
        p = rt.read_params(params.path, search=True)
        rt.check_shared_storage(p, workers)
        digest = content_sha256 or rt.content_hash(dataset.path)
        name, _ = init_study(p, content_sha256=digest)
        return name


@dsl.component(**COMPONENT)
def search_worker(params: Input[Artifact], dataset: Input[Dataset], worker: int) -> str:
    """One ParallelFor worker: trains trials of the shared study until it holds search.n_trials
    finished trials (semidisent.stages.search.run_search). Returns its trial counts (JSON)."""
    import json

    from semidisent.kfp_pipeline import runtime as rt
    from semidisent.kfp_pipeline.cluster import check_gpu
    from semidisent.stages.search import run_search

    with rt.step("search worker"):
        p = rt.read_params(params.path, search=True)
        check_gpu(p.train.device, "train.device")
        out = rt.scratch("search")
        wid = rt.worker_id(p, worker)
        result = run_search(p, dataset.path, out, worker_id=wid, progress=False)
        counts = {"worker": worker, "trials_run": len(result.trials_run), **result.counts}
        return json.dumps(counts)


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

    with rt.step("search: summary"):
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
    from semidisent.kfp_pipeline.cluster import check_gpu
    from semidisent.stages.train import run_train_tracked

    with rt.step("train"):
        p = rt.with_best(rt.read_params(params.path), study.path)
        check_gpu(p.train.device, "train.device")
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
    from semidisent.kfp_pipeline.cluster import check_gpu

    with rt.step("evaluate"):
        p = rt.read_params(model.path)  # the params the model was trained with (best config)
        check_gpu(p.eval.device, "eval.device")
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
    (semidisent.stages.report.run_report_tracked). Returns the registered model's URI,
    ``models:/<name>/<version>``."""
    import json
    import shutil

    from semidisent.kfp_pipeline import runtime as rt
    from semidisent.stages.report import run_report_tracked

    with rt.step("report"):
        p = rt.read_params(model.path)
        out = rt.scratch("report") / "report"
        run_report_tracked(p, rt.working_copy(model.path), evaluation.path, out)
        rt.publish_report(out, report_html, report_md)
        info_file = out / "registered_model.json"
        if not info_file.exists():  # tracking.enabled = false: nothing registered
            return ""
        info = json.loads(info_file.read_text())
        shutil.copyfile(info_file, registered.path)
        registered.metadata.update({**info, "registered_uri": rt.registered_uri(info)})
        return rt.registered_uri(info)


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
