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
}
OPTUNA_KEYS = {"url": "SEMIDISENT_SEARCH_STORAGE"}  # = runtime.STORAGE_ENV


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
    # Requests of the GPU tasks and of the others (prepare, evaluate, report, search bookkeeping).
    gpu_task_cpu: str = "4"
    gpu_task_memory: str = "16Gi"
    cpu_task_cpu: str = "2"
    cpu_task_memory: str = "8Gi"
    # Secrets (names in the run's namespace).
    s3_secret: str = "semidisent-s3"
    mlflow_secret: str = "semidisent-mlflow"
    optuna_secret: str = "semidisent-optuna"
    # S3-compatible endpoint (MinIO, Ceph, ...) for the DVC remote and client-side MLflow
    # artifacts; "" = AWS.
    s3_endpoint_url: str = ""
    # Optional PVC for the dataset cache: official dataset files (data.path=/data/...) and the
    # training checkpoints, so that a retried pod resumes.
    data_pvc: str = ""
    data_mount: str = "/data"
    image_pull_secret: str = ""
    retries: int = 2

    @property
    def checkpoint_root(self) -> str:
        return f"{self.data_mount.rstrip('/')}/checkpoints" if self.data_pvc else ""


def local_settings() -> ClusterSettings:
    """``run-local``: the same pipeline on this machine's CPU (kfp.local ignores the pod spec;
    two workers is what its thread pool runs at once)."""
    return ClusterSettings(image="semidisent:local", gpus=0, search_workers=2)
