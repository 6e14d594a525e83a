"""Kubernetes settings of the pipeline's tasks (kfp-kubernetes): GPUs, requests, secrets, PVC.

Called by the pipeline's wiring (``pipelines/semidisent_pipeline.py``) so that the wiring stays a
list of steps. kfp.local ignores all of it (its tasks inherit the parent's environment).
"""

from __future__ import annotations

from typing import Any

from .settings import MLFLOW_KEYS, OPTUNA_KEYS, S3_KEYS, ClusterSettings


def common(task: Any, s: ClusterSettings, *, search: bool = False) -> Any:
    """Image, credentials from secrets (as environment variables), the S3 endpoint, the PVC."""
    from kfp import kubernetes

    task.set_container_image(s.image)
    kubernetes.use_secret_as_env(task, s.s3_secret, dict(S3_KEYS), optional=True)
    kubernetes.use_secret_as_env(task, s.mlflow_secret, dict(MLFLOW_KEYS), optional=True)
    if search:
        kubernetes.use_secret_as_env(task, s.optuna_secret, dict(OPTUNA_KEYS), optional=True)
    if s.s3_endpoint_url:
        # boto3 (DVC remote) and MLflow's client-side S3 artifact store read these.
        task.set_env_variable("AWS_ENDPOINT_URL", s.s3_endpoint_url)
        task.set_env_variable("MLFLOW_S3_ENDPOINT_URL", s.s3_endpoint_url)
    if s.data_pvc:
        kubernetes.mount_pvc(task, pvc_name=s.data_pvc, mount_path=s.data_mount)
    if s.image_pull_secret:
        kubernetes.set_image_pull_secrets(task, [s.image_pull_secret])
    return task


def cpu_task(task: Any, s: ClusterSettings, *, search: bool = False) -> Any:
    common(task, s, search=search)
    task.set_cpu_request(s.cpu_task_cpu).set_memory_request(s.cpu_task_memory)
    return task


def gpu_task(task: Any, s: ClusterSettings, *, search: bool = False) -> Any:
    """Training work: a GPU (type and limit), CPU/memory requests, the GPU nodes' taint
    tolerated, retries (a retried training resumes from its checkpoints on the PVC)."""
    from kfp import kubernetes

    common(task, s, search=search)
    task.set_cpu_request(s.gpu_task_cpu).set_memory_request(s.gpu_task_memory)
    if s.gpus > 0:
        task.set_accelerator_type(s.accelerator).set_accelerator_limit(s.gpus)
        if s.gpu_toleration:
            kubernetes.add_toleration(
                task, key=s.gpu_toleration, operator="Exists", effect="NoSchedule"
            )
        if s.gpu_node_selector:
            label, _, value = s.gpu_node_selector.partition("=")
            kubernetes.add_node_selector(task, label_key=label, label_value=value)
    if s.retries:
        task.set_retry(num_retries=s.retries, backoff_duration="60s")
    return task
