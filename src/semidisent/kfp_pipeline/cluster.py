"""What a real cluster needs that ``kfp.local`` never shows: checked before work starts.

kfp.local runs every step in one process tree, on one filesystem, with the caller's environment:
a sqlite tracking store or Optuna study is shared by every step there, and the image, the GPUs
and the volumes are never looked at. In a cluster each step is a pod with its own disk. So:

- at compile / submit time (:func:`compile_problems`): the placeholder image, values in params
  that can only be pod-local (a sqlite / file tracking URI or study), credentials inside URLs
  (they would be written into the pipeline spec), a backend version out of range;
- in the pipeline's first step, inside the cluster (:func:`pod_problems`): the tracking URI and
  the study storage the pods will really use (params, else the secrets / ConfigMap), and the
  image against the code the pipeline was compiled from;
- in the GPU steps (:func:`check_gpu`): a GPU was requested, so ``device: auto`` must find one;
- on the PVC (:func:`writable_dir`): a first write that fails says which path and what to do.

Each problem is one line saying what to configure. Nothing here imports kfp.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config.schema import Params
from ..errors import SemidisentError
from ..tracking.redact import redact_value
from .runtime import STORAGE_ENV
from .settings import (
    DEFAULT_IMAGE,
    MIN_BACKEND,
    OLDEST_BACKEND,
    ClusterSettings,
    parse_version,
)

# Set by Kubernetes in every pod.
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
# Compile-time facts every task carries (JSON, set by kfp_pipeline.k8s): the names of the
# secrets / ConfigMap (for the messages), the PVC, the GPUs this task requested and the code
# the pipeline was compiled from.
SETTINGS_ENV = "SEMIDISENT_CLUSTER"
DOCS = "docs/kubeflow.md"


class ClusterError(SemidisentError):
    """The cluster set-up cannot run this pipeline (one line: what to configure)."""


def in_cluster() -> bool:
    return bool(os.environ.get(IN_CLUSTER_ENV))


def task_settings() -> dict[str, Any]:
    """The compile-time facts of this task (empty outside a compiled pipeline)."""
    try:
        value = json.loads(os.environ.get(SETTINGS_ENV) or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def settings_env(s: ClusterSettings, *, gpus: int = 0) -> str:
    """The JSON of :data:`SETTINGS_ENV` for one task."""
    value: dict[str, Any] = {
        "mlflow_secret": s.mlflow_secret,
        "optuna_secret": s.optuna_secret,
        "tracking_configmap": s.tracking_configmap,
        "data_pvc": s.data_pvc,
        "data_mount": s.data_mount,
    }
    if gpus:
        value.update(gpus=gpus, accelerator=s.accelerator)
    if s.source:
        value["source"] = json.loads(s.source)
    return json.dumps(value, sort_keys=True)


# ------------------------------------------------------------------------------ URIs


def scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def is_pod_local(uri: str) -> bool:
    """A store that lives on the disk of whoever opens it: sqlite, file:, a bare path (but
    not MLflow's ``databricks`` / ``databricks://profile`` forms, which name a server)."""
    if uri.split(":", 1)[0].lower().startswith("databricks"):
        return False
    s = scheme(uri)
    return s in ("", "file") or s.startswith("sqlite")


def has_password(uri: str) -> bool:
    """``scheme://user:password@host``: the password would travel in plain text."""
    import re

    return bool(re.match(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^/@\s:]*:[^/@\s]+@", uri))


def _tracking_fix(names: Mapping[str, Any]) -> str:
    cm = names.get("tracking_configmap") or "semidisent-tracking"
    return (
        f"set MLFLOW_TRACKING_URI in the ConfigMap {cm} (kubectl create configmap {cm} "
        "--from-literal=MLFLOW_TRACKING_URI=http://mlflow.mlflow.svc.cluster.local:5000), or "
        f"-S tracking.uri=http://..., or -S tracking.enabled=false ({DOCS} step 2)"
    )


def _storage_fix(names: Mapping[str, Any]) -> str:
    secret = names.get("optuna_secret") or "semidisent-optuna"
    return (
        f"create the secret {secret} with key url = the study's postgresql+psycopg2:// URL "
        f"({DOCS} step 2)"
    )


# ------------------------------------------------------------------------------ compile time


def compile_problems(params: Params, settings: ClusterSettings) -> list[str]:
    """What makes ``params`` + ``settings`` fail on a cluster, known before anything is sent."""
    out: list[str] = []
    if settings.image == DEFAULT_IMAGE:
        out.append(
            f"--image: {DEFAULT_IMAGE} is a placeholder; build and push components/Dockerfile "
            f"({DOCS} step 1), then pass --image REGISTRY/semidisent:TAG (or set "
            "$SEMIDISENT_IMAGE)"
        )
    version = parse_version(settings.kfp_backend)
    if version is None or version < (parse_version(OLDEST_BACKEND) or ()):
        out.append(
            f"--kfp-backend {settings.kfp_backend!r}: expected a Kubeflow Pipelines backend "
            f"version >= {OLDEST_BACKEND}, e.g. {MIN_BACKEND}"
        )
    tp = params.tracking
    if tp.enabled and tp.uri and is_pod_local(tp.uri):
        out.append(
            f"tracking.uri = {redact_value(tp.uri)!r} would be a file inside each pod (train, "
            f"evaluate and report could not see each other's runs); {_tracking_fix({})}"
        )
    if tp.enabled and not tp.uri and not (settings.tracking_configmap or settings.mlflow_secret):
        out.append(
            "tracking.uri is null and no ConfigMap / secret gives MLFLOW_TRACKING_URI "
            "(--tracking-configmap '' and --mlflow-secret ''): each pod would log to its own "
            f"sqlite file; {_tracking_fix({})}"
        )
    storage = params.search.storage
    if is_pod_local(storage) and not settings.optuna_secret:
        out.append(
            f"search.storage = {redact_value(storage)!r} is a file inside each pod and no "
            f"secret replaces it (--optuna-secret ''); {_storage_fix({})}"
        )
    secrets = {
        "tracking.uri": "the secret of --mlflow-secret, key MLFLOW_TRACKING_URI",
        "search.storage": _storage_fix({}),
    }
    for key, value in (("tracking.uri", tp.uri), ("search.storage", storage)):
        if value and has_password(value):
            out.append(
                f"{key} = {redact_value(value)!r} carries a password, which would be written "
                f"into the pipeline spec; put the URL in a secret instead: {secrets[key]}"
            )
    return out


def check_compile(params: Params, settings: ClusterSettings) -> None:
    problems = compile_problems(params, settings)
    if problems:
        raise ClusterError("; ".join(problems))


# ------------------------------------------------------------------------------ in the pod


def pod_problems(params: Params) -> tuple[list[str], list[str]]:
    """(errors, warnings) of this pod's configuration; nothing outside a cluster.

    The tracking URI and the study storage are the ones the steps will use: params, else the
    environment the secrets / ConfigMap set (``MLFLOW_TRACKING_URI``,
    ``SEMIDISENT_SEARCH_STORAGE``)."""
    if not in_cluster():
        return [], []
    from ..tracking.factory import resolve_tracking_uri
    from .image import Source, image_source, skew

    names = task_settings()
    errors: list[str] = []
    warnings: list[str] = []
    if params.tracking.enabled:
        uri = resolve_tracking_uri(params.tracking)
        if is_pod_local(uri):
            where = (
                "tracking.uri"
                if params.tracking.uri
                else "tracking.uri is null and $MLFLOW_TRACKING_URI unset, so the default"
            )
            errors.append(
                f"{where} {redact_value(uri)!r} is a file inside this pod: every step would "
                f"log to its own database; {_tracking_fix(names)}"
            )
    storage = os.environ.get(STORAGE_ENV) or params.search.storage
    if is_pod_local(storage):
        errors.append(
            f"search.storage = {redact_value(storage)!r} is a file inside this pod: the search "
            f"steps (separate pods) cannot share it; {_storage_fix(names)}"
        )
    compiled = Source.decode(names.get("source"))
    if compiled is not None:
        error, warning = skew(compiled, image_source())
        errors += [error] if error else []
        warnings += [warning] if warning else []
    return errors, warnings


def check_pod(params: Params) -> None:
    """The first step's check: refuse, in one line per problem, what cannot work."""
    import logging

    errors, warnings = pod_problems(params)
    for w in warnings:
        logging.getLogger(__name__).warning("%s", w)
    if errors:
        raise ClusterError("; ".join(errors))


def check_gpu(setting: str, key: str) -> None:
    """A step that requested GPUs must not fall back to the CPU silently (``device: auto``)."""
    gpus = int(task_settings().get("gpus") or 0)
    if not (in_cluster() and gpus > 0 and setting == "auto"):
        return
    from ..training.runtime import cuda_unusable_reason

    reason = cuda_unusable_reason()
    if reason is not None:
        accelerator = task_settings().get("accelerator", "nvidia.com/gpu")
        raise ClusterError(
            f"{key} = auto but CUDA is not usable in this step, which requested {gpus} "
            f"{accelerator} ({reason}): it would train on the CPU for hours; check the node's "
            f"NVIDIA driver / device plugin, or compile with --gpus 0 (or -S {key}=cpu) to use "
            "the CPU on purpose"
        )


def writable_dir(path: str | Path, what: str) -> Path:
    """``path`` created and writable, or one line naming it and the fix (a PVC freshly
    provisioned is often owned by root, while the image runs as uid 1000)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".semidisent-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        names = task_settings()
        mount = names.get("data_mount") or "/data"
        on_pvc = str(path).startswith(str(mount))
        fix = (
            f"the PVC {names.get('data_pvc') or ''} at {mount} is not writable by uid "
            f"{os.getuid()} (gid {os.getgid()}); make it so once (the chown Job in {DOCS}, "
            "'PVC ownership')"
            if on_pvc
            else "point it at a writable directory"
        )
        raise ClusterError(f"cannot write {what} {path} ({e.strerror or e}); {fix}") from None
    return path
