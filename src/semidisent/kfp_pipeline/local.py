"""``semidisent pipeline run-local``: the same pipeline, executed by ``kfp.local``.

Every step runs as a subprocess of this machine's interpreter (``SubprocessRunner`` with
``use_venv=False``: the package and kfp are installed here, nothing is fetched). kfp.local
ignores the pod spec (image, GPUs, secrets, PVC): the steps inherit this process's environment
(``MLFLOW_TRACKING_URI``, AWS credentials, ...) and run on the CPU. Its thread pool runs at most
two ParallelFor iterations at once, hence two search workers.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import load_params
from ..config.schema import Params
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
    path: str | Path | None, overrides: list[str] | tuple[str, ...], root: Path, tiny: bool = True
) -> Params:
    """Params of a local run: the tiny budget (unless ``tiny`` is false), the user's overrides,
    and (unless overridden) the study in a sqlite file of this run, shared by the workers."""
    pre = [*(TINY_OVERRIDES if tiny else ()), f"search.storage=sqlite:///{root / 'optuna.db'}"]
    return load_params(path, [*pre, *overrides])


def run_local(
    params: Params,
    root: Path,
    settings: ClusterSettings | None = None,
    *,
    dvc_remote: str = "",
    data_version: str = "",
) -> LocalRun:
    from kfp import local

    from .compile import build_pipeline

    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(params, settings or local_settings())
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    # Tasks are subprocesses: they inherit this environment (tracking URI, credentials).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ[WORK_ENV] = str(root / "work")
    task = pipeline(dvc_remote=dvc_remote, data_version=data_version)
    return LocalRun(
        params=params,
        root=root,
        model_uri=str(task.output or ""),
        seconds=time.perf_counter() - t0,
    )


def default_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="semidisent-kfp-local-"))
