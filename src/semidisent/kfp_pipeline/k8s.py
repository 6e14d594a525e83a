"""Kubernetes settings of the pipeline's tasks (kfp-kubernetes): GPUs, requests and limits,
timeouts, secrets and ConfigMap, PVC, caching.

Called by the pipeline's wiring (``pipelines/semidisent_pipeline.py``) so that the wiring stays a
list of steps. kfp.local ignores all of it (its tasks inherit the parent's environment) except
the container's environment variables; ``semidisent pipeline run-local --cluster-like`` honours
the secrets and ConfigMap too (kfp_pipeline.sandbox).

Caching: a task that has side effects outside its outputs (creating a study, training trials,
logging to MLflow, registering a model) must run every time, so :func:`no_cache` turns KFP's
cache off for it explicitly; prepare, whose only inputs are the data parameters, keeps it on.
"""

from __future__ import annotations

from typing import Any

from .cluster import SETTINGS_ENV, settings_env
from .settings import (
    MLFLOW_KEYS,
    OPTUNA_KEYS,
    S3_KEYS,
    TRACKING_CONFIG_KEYS,
    ClusterSettings,
)


def common(task: Any, s: ClusterSettings, *, search: bool = False, gpus: int = 0) -> Any:
    """Image, credentials from secrets and the tracking URI from the ConfigMap (as environment
    variables), the S3 endpoint, the PVC, and the compile-time facts the steps check."""
    from kfp import kubernetes

    task.set_container_image(s.image)
    # `optional` (a missing secret leaves its variables unset) needs KFP backend 2.15; compiled
    # for an older one, the field is left out and every named source must exist.
    opt = {"optional": True} if s.optional_env else {}
    if s.s3_secret:
        kubernetes.use_secret_as_env(task, s.s3_secret, dict(S3_KEYS), **opt)
    if s.mlflow_secret:
        kubernetes.use_secret_as_env(task, s.mlflow_secret, dict(MLFLOW_KEYS), **opt)
    if s.tracking_configmap:
        kubernetes.use_config_map_as_env(
            task, s.tracking_configmap, dict(TRACKING_CONFIG_KEYS), **opt
        )
    if search and s.optuna_secret:
        kubernetes.use_secret_as_env(task, s.optuna_secret, dict(OPTUNA_KEYS), **opt)
    task.set_env_variable(SETTINGS_ENV, settings_env(s, gpus=gpus))
    if s.s3_endpoint_url:
        # boto3 (DVC remote) and MLflow's client-side S3 artifact store read these.
        task.set_env_variable("AWS_ENDPOINT_URL", s.s3_endpoint_url)
        task.set_env_variable("MLFLOW_S3_ENDPOINT_URL", s.s3_endpoint_url)
    if s.data_pvc:
        kubernetes.mount_pvc(task, pvc_name=s.data_pvc, mount_path=s.data_mount)
    if s.image_pull_secret:
        kubernetes.set_image_pull_secrets(task, [s.image_pull_secret])
    return task


def no_cache(task: Any) -> Any:
    """A task with side effects (study, trials, MLflow runs, registered model): never reused."""
    return task.set_caching_options(False)


def cpu_task(task: Any, s: ClusterSettings, *, search: bool = False) -> Any:
    common(task, s, search=search)
    task.set_cpu_request(s.cpu_task_cpu).set_memory_request(s.cpu_task_memory)
    task.set_cpu_limit(s.cpu_task_cpu_limit).set_memory_limit(s.cpu_task_memory_limit)
    return task


def gpu_task(task: Any, s: ClusterSettings, *, search: bool = False) -> Any:
    """Training work: a GPU (type and limit), CPU/memory requests and limits, the GPU nodes'
    taint tolerated, a wall-clock limit, retries (a retried training resumes from its
    checkpoints on the PVC)."""
    from kfp import kubernetes

    common(task, s, search=search, gpus=s.gpus)
    task.set_cpu_request(s.gpu_task_cpu).set_memory_request(s.gpu_task_memory)
    task.set_cpu_limit(s.gpu_task_cpu_limit).set_memory_limit(s.gpu_task_memory_limit)
    if s.gpu_timeout_h > 0:
        # A hung step (a stuck NCCL/CUDA call, a dead storage mount) is stopped and retried
        # instead of holding its GPU for days.
        kubernetes.set_timeout(task, int(s.gpu_timeout_h * 3600))
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
