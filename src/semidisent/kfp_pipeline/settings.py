"""Cluster settings of the compiled pipeline: what is fixed at compile time, not per run.

Per-run values are pipeline parameters (every params.yaml key, see :mod:`.parameters`, plus
``dvc_remote`` and ``data_version``). What Kubernetes needs to schedule a pod
(image, GPUs, secrets, volumes, requests) is in the pipeline spec's executor and platform
sections, which KFP fixes at compile time; those are these settings (``semidisent pipeline
compile --image ... --gpus ...``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# A placeholder: build and push the image (components/Dockerfile, docs/kubeflow.md) and pass
# --image or set SEMIDISENT_IMAGE. Lower case: image references must be.
DEFAULT_IMAGE = "ghcr.io/owner/semidisent:latest"
IMAGE_ENV = "SEMIDISENT_IMAGE"

# Secrets, mapped key -> environment variable. All are optional in the pod spec: a missing
# secret (or key) leaves the variable unset, e.g. MLflow with proxied artifacts needs no S3
# credentials in the pods. The search refuses, with a clear error, to run a shared study on a
# pod-local sqlite file (runtime.check_shared_storage).
S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
}
MLFLOW_KEYS = {
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN": "MLFLOW_TRACKING_TOKEN",
    # The server's URL may live in the secret too (when it embeds credentials).
    "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
}
OPTUNA_KEYS = {"url": "SEMIDISENT_SEARCH_STORAGE"}  # = runtime.STORAGE_ENV
# The tracking server's URL without credentials: a ConfigMap, like any other setting of the
# namespace (params' tracking.uri, when set, wins).
TRACKING_CONFIG_KEYS = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}
# The oldest Kubeflow Pipelines backend that runs the default IR: `optional` on secret and
# ConfigMap env vars is read from backend 2.15 on (older drivers refuse the unknown field);
# parameterised secret / PVC names (secretNameParameter, pvcNameParameter) from 2.5 on.
# `--kfp-backend` compiles for an older one without them (docs/kubeflow.md).
MIN_BACKEND = "2.15"
OPTIONAL_FROM = (2, 15)
NAME_PARAMETERS_FROM = (2, 5)
OLDEST_BACKEND = "2.2"  # Kubeflow 1.9; older ones are not supported


@dataclass(frozen=True)
class ClusterSettings:
    image: str = field(default_factory=lambda: os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE)
    # Search workers (ParallelFor items; each trains batches of trials on its own GPU).
    search_workers: int = 2
    # GPUs of train and of each search worker; 0 = CPU only.
    gpus: int = 1
    accelerator: str = "nvidia.com/gpu"
    # Taint key of the GPU nodes tolerated by the GPU tasks ("" = none) and an optional node
    # selector "label=value" (e.g. cloud.google.com/gke-accelerator=nvidia-l4).
    gpu_toleration: str = "nvidia.com/gpu"
    gpu_node_selector: str = ""
    # Requests of the GPU tasks and of the others (prepare, evaluate, report, search bookkeeping),
    # and their limits: memory limit = request (a pod over it is OOM-killed instead of starving
    # its node), CPU limit = request (the cgroup quota the steps size their workers by).
    gpu_task_cpu: str = "4"
    gpu_task_memory: str = "16Gi"
    cpu_task_cpu: str = "2"
    cpu_task_memory: str = "8Gi"
    gpu_task_cpu_limit: str = "4"
    gpu_task_memory_limit: str = "16Gi"
    cpu_task_cpu_limit: str = "2"
    cpu_task_memory_limit: str = "8Gi"
    # Wall-clock limit of each GPU step (train, search worker, evaluate) in hours; 0 = none.
    gpu_timeout_h: float = 48.0
    # Secrets (names in the run's namespace).
    s3_secret: str = "semidisent-s3"
    mlflow_secret: str = "semidisent-mlflow"
    optuna_secret: str = "semidisent-optuna"
    # ConfigMap with MLFLOW_TRACKING_URI ("" = none).
    tracking_configmap: str = "semidisent-tracking"
    # S3-compatible endpoint (MinIO, Ceph, ...) for the DVC remote and client-side MLflow
    # artifacts; "" = AWS.
    s3_endpoint_url: str = ""
    # Optional PVC for the dataset cache: official dataset files (data.path=/data/...) and the
    # training checkpoints, so that a retried pod resumes.
    data_pvc: str = ""
    data_mount: str = "/data"
    image_pull_secret: str = ""
    retries: int = 2
    # The Kubeflow Pipelines backend the IR is compiled for (MIN_BACKEND and older, down to
    # OLDEST_BACKEND: without the fields those lack, every named secret / ConfigMap must exist).
    kfp_backend: str = MIN_BACKEND
    # What the pipeline was compiled from (JSON of image.Source: version, commit, dirty; filled
    # in by compile; "" = unknown / run-local): the first step compares it with the image's.
    source: str = ""

    @property
    def checkpoint_root(self) -> str:
        return f"{self.data_mount.rstrip('/')}/checkpoints" if self.data_pvc else ""

    @property
    def backend(self) -> tuple[int, ...]:
        return parse_version(self.kfp_backend) or OPTIONAL_FROM

    @property
    def optional_env(self) -> bool:
        """Secrets / ConfigMaps as optional env sources (a missing one leaves its variables
        unset) needs backend 2.15; older drivers refuse the field."""
        return self.backend >= OPTIONAL_FROM


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``2.15.0`` / ``v2.4.1`` / ``2.5.0-rc.1`` -> (2, 15, 0) / (2, 4, 1) / (2, 5, 0); None
    for what is not a version (``dev``, ``""``)."""
    import re

    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", (text or "").strip())
    if not m:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def local_settings() -> ClusterSettings:
    """``run-local``: the same pipeline on this machine's CPU (kfp.local ignores the pod spec;
    two workers is what its thread pool runs at once). No retries: kfp.local honours them (with
    their minute-long backoff), and on one machine a failed step fails the same way again."""
    return ClusterSettings(image="semidisent:local", gpus=0, search_workers=2, retries=0)
