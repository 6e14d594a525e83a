"""``semidisent pipeline run-local``: the same pipeline, executed by ``kfp.local``.

Every step runs as a subprocess of this machine's interpreter (``SubprocessRunner`` with
``use_venv=False``: the package and kfp are installed here, nothing is fetched). kfp.local
ignores the pod spec (image, GPUs, secrets, PVC): the steps inherit this process's environment
(``MLFLOW_TRACKING_URI``, AWS credentials, ...) and run on the CPU. Its thread pool runs at most
two ParallelFor iterations at once, hence two search workers.

``cluster_like``: each step isolated as its pod would be (:mod:`.sandbox`): its own empty
directories, no inherited environment, the secrets / ConfigMap of a manifests file, and
``KUBERNETES_SERVICE_HOST`` set, so the in-cluster checks apply and the params are the ones a
cluster run gets (no sqlite study of the run).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import load_params
from ..config.schema import Params
from ..errors import SemidisentError
from .runtime import WORK_ENV
from .settings import ClusterSettings, local_settings

# The tiny budget: a CPU run in minutes, every step and every MLflow record of the real thing.
# Applied before the user's -S overrides (which win).
TINY_OVERRIDES = (
    "train.steps=60",
    "train.batch_size=16",
    "train.log_every=20",
    "train.checkpoint_every=60",
    "train.device=cpu",
    "search.n_trials=2",
    "search.baseline_trials=1",  # one p = 0 baseline, one sampled trial
    "search.trials_per_batch=1",
    "search.steps=20",
    "search.reports=1",
    "search.n_startup_trials=1",
    "search.gt_metrics=[]",
    "search.heartbeat_s=null",
    "eval.sample_scale=0.01",
    "eval.device=cpu",
)


@dataclass(frozen=True)
class LocalRun:
    params: Params
    root: Path  # kfp.local's pipeline root: every task's artifacts
    model_uri: str  # the registered model ("" with tracking disabled)
    seconds: float


def local_params(
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...],
    root: Path,
    tiny: bool = True,
    cluster_like: bool = False,
) -> Params:
    """Params of a local run: the tiny budget (unless ``tiny`` is false), the user's overrides,
    and (unless overridden, or ``cluster_like``) the study in a sqlite file of this run, shared
    by the workers."""
    pre = list(TINY_OVERRIDES if tiny else ())
    if not cluster_like:
        pre.append(f"search.storage=sqlite:///{root / 'optuna.db'}")
    return load_params(path, [*pre, *overrides])


def run_local(
    params: Params,
    root: Path,
    settings: ClusterSettings | None = None,
    *,
    dvc_remote: str = "",
    data_version: str = "",
    cluster_like: bool = False,
    manifests: str | Path | None = None,
) -> LocalRun:
    """Run the pipeline with kfp.local; ``cluster_like``: each step as a pod (``manifests``:
    the Secret / ConfigMap manifests of its namespace)."""
    from kfp import local

    from .compile import build_pipeline, compile_pipeline, with_source

    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    settings = settings or local_settings()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    with contextlib.ExitStack() as stack:
        if cluster_like:
            from .image import Source
            from .project import project_root
            from .sandbox import cluster_like as sandboxed

            settings = with_source(settings)
            package = compile_pipeline(params, settings, root / "pipeline.yaml")
            commit = Source.decode(json.loads(settings.source)) or Source("")
            stack.enter_context(
                sandboxed(
                    package,
                    manifests,
                    root / "pods",
                    project_root() / "components" / "Dockerfile",
                    commit.commit,
                )
            )
        else:
            # Tasks are subprocesses: they inherit this environment (tracking URI, credentials).
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            os.environ[WORK_ENV] = str(root / "work")
        pipeline = build_pipeline(params, settings)
        try:
            task = pipeline(dvc_remote=dvc_remote, data_version=data_version)
        except RuntimeError as e:
            # kfp.local: "Pipeline '...' finished with status FAILURE. Inner task failed: '...'"
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # kfp.local colours the task names
            failed = re.findall(r"'([^']+)'", text.partition("Inner task failed:")[2])
            step = failed[-1] if failed else "?"
            raise SemidisentError(
                f"the pipeline failed at step {step} (its log, above, says why); artifacts "
                f"under {root}"
            ) from None
    return LocalRun(
        params=params,
        root=root,
        model_uri=str(task.output or ""),
        seconds=time.perf_counter() - t0,
    )


def default_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="semidisent-kfp-local-"))
