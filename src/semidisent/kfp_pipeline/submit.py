"""``semidisent pipeline submit``: compile, then create a run on a Kubeflow Pipelines API.

Before anything is sent: the cluster checks of :mod:`.cluster` (placeholder image, pod-local
stores, passwords in URLs). Then the endpoint: unreachable or refusing is one line, and a
backend that reports an older version than the one the IR is compiled for is refused with the
fix. Optionally the package is uploaded as a named pipeline version (listed in the UI's
Pipelines page, schedulable) and the run is created from that version.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.schema import Params
from ..errors import SemidisentError
from ..tracking.redact import redact_value
from .cluster import check_compile
from .compile import compile_pipeline, with_source
from .parameters import changed_arguments
from .settings import MIN_BACKEND, OLDEST_BACKEND, ClusterSettings, parse_version


class SubmitError(SemidisentError):
    """The Kubeflow Pipelines endpoint cannot take the run (one line: why, and what to do)."""


@dataclass(frozen=True)
class Submitted:
    run_id: str
    url: str
    arguments: dict[str, Any]
    backend: str = ""  # the version the server reported ("" = none)
    pipeline_version: str = ""  # "<pipeline id>/<version id>" when uploaded


def run_url(host: str, run_id: str) -> str:
    """The run's page in the Kubeflow Pipelines UI (what kfp.Client prints)."""
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def _reason(e: BaseException) -> str:
    """The useful part of a network error: ``Connection refused``, ``Name or service not
    known``, ... (urllib3 nests it inside MaxRetryError / NewConnectionError texts)."""
    import re

    text = str(getattr(e, "reason", None) or e)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return found.group(1).strip() if found else (text.splitlines() or [type(e).__name__])[0]


@contextmanager
def talking_to(host: str, what: str) -> Iterator[None]:
    """Network and API failures of one call as one line naming the endpoint (kfp's client
    and urllib3 otherwise print warnings and retries before a traceback)."""
    import logging
    import warnings

    # (kfp_server_api resets the "urllib3" logger itself: quiet its connection pool instead)
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    level = urllib3_log.level
    urllib3_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="This client only works", category=FutureWarning
            )
            yield
    except SemidisentError:
        raise
    except Exception as e:
        status = getattr(e, "status", None)
        if status is not None:  # kfp_server_api.ApiException: the server answered
            reason = str(getattr(e, "reason", "") or "").strip()
            body = str(getattr(e, "body", "") or "").strip().replace("\n", " ")[:300]
            hint = {
                401: "set $KFP_TOKEN (a bearer token for the endpoint)",
                403: "the token / namespace lacks permission (--namespace for multi-user Kubeflow)",
                404: "check --host: it is the pipeline API's URL, e.g. https://kubeflow.example.com/pipeline",
            }.get(int(status), "see the server's log")
            raise SubmitError(
                f"Kubeflow Pipelines at {host} refused to {what}: HTTP {status} {reason} "
                f"{body}; {hint}"
            ) from None
        raise SubmitError(
            f"cannot reach Kubeflow Pipelines at {host} ({redact_value(_reason(e))[:200]}); "
            "check --host (e.g. https://kubeflow.example.com/pipeline), the network / "
            "port-forward, and $KFP_TOKEN"
        ) from None
    finally:
        urllib3_log.setLevel(level)


def server_version(client: Any) -> str:
    """The backend version the API reports in its health check (``tag_name``; the UI's proxy
    calls it ``apiServerTagName``), or "" when it reports none."""
    api = getattr(client, "_healthz_api", None)
    if api is None:
        return ""
    response = api.healthz_service_get_healthz(_preload_content=False)
    try:
        body = json.loads(response.data or b"{}")
    except (ValueError, TypeError):
        return ""
    if not isinstance(body, dict):
        return ""
    return str(body.get("tag_name") or body.get("apiServerTagName") or "").strip()


def check_backend(reported: str, settings: ClusterSettings) -> None:
    """Refuse a backend older than the one the IR is compiled for (when it reports a version)."""
    have = parse_version(reported)
    if have is None:
        return
    if have < settings.backend:
        lower = f"--kfp-backend {reported.lstrip('v')}"
        fix = (
            f"compile for it with {lower} (then every named secret and ConfigMap must exist, "
            "docs/kubeflow.md) or upgrade the backend"
            if have >= (parse_version(OLDEST_BACKEND) or ())
            else f"upgrade it (this pipeline needs >= {OLDEST_BACKEND}, {MIN_BACKEND} by default)"
        )
        raise SubmitError(
            f"the Kubeflow Pipelines backend reports version {reported}, older than the "
            f"{settings.kfp_backend} this pipeline is compiled for; {fix}"
        )


def submit(
    base: Params,
    run: Params,
    settings: ClusterSettings,
    *,
    host: str,
    experiment: str,
    run_name: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    extra_arguments: dict[str, Any] | None = None,
    enable_caching: bool | None = None,
    pipeline_name: str | None = None,
    version_name: str | None = None,
    client_factory: Callable[..., Any] | None = None,
) -> Submitted:
    """Compile the pipeline with ``base``'s values as defaults and create a run with the
    arguments of ``run`` that differ (so the UI shows what this run changed).

    Both are validated params already: an invalid value was refused before this point. With
    ``pipeline_name``, the package is uploaded as a version (``version_name``, default: the
    source commit and time) of that pipeline first, and the run is created from it.
    """
    for params in (base, run):
        check_compile(params, settings)
    settings = with_source(settings)
    if client_factory is None:
        import kfp

        client_factory = kfp.Client
    args = {**changed_arguments(base, run), **(extra_arguments or {})}
    with tempfile.TemporaryDirectory(prefix="semidisent-submit-") as tmp:
        package = compile_pipeline(base, settings, Path(tmp) / "semidisent.yaml")
        with talking_to(host, "answer its health check"):
            client = client_factory(
                host=host, existing_token=token, **({"namespace": namespace} if namespace else {})
            )
            reported = server_version(client)
        check_backend(reported, settings)
        uploaded = ""
        if pipeline_name:
            with talking_to(host, "take the pipeline version"):
                pipeline_id, version_id = upload_version(
                    client,
                    package,
                    pipeline_name,
                    version_name or default_version_name(settings),
                    namespace,
                )
            uploaded = f"{pipeline_id}/{version_id}"
            with talking_to(host, "create the run"):
                exp = client.create_experiment(experiment, namespace=namespace)
                experiment_id = exp.experiment_id
                result = client.run_pipeline(
                    experiment_id=experiment_id,
                    job_name=run_name or f"{pipeline_name} {version_name or ''}".strip(),
                    params=args,
                    pipeline_id=pipeline_id,
                    version_id=version_id,
                    enable_caching=enable_caching,
                )
        else:
            with talking_to(host, "create the run"):
                result = client.create_run_from_pipeline_package(
                    str(package),
                    arguments=args,
                    run_name=run_name,
                    experiment_name=experiment,
                    namespace=namespace,
                    enable_caching=enable_caching,
                )
    return Submitted(
        run_id=result.run_id,
        url=run_url(host, result.run_id),
        arguments=args,
        backend=reported,
        pipeline_version=uploaded,
    )


def default_version_name(settings: ClusterSettings) -> str:
    """The source commit (short) and the time: unique, and says what it holds."""
    import time

    from .image import Source

    source = Source.decode(json.loads(settings.source or "null"))
    commit = source.commit[:12] if source and source.commit else "unknown"
    return f"{commit}-{time.strftime('%Y%m%d-%H%M%S')}"


def upload_version(
    client: Any, package: Path, pipeline_name: str, version_name: str, namespace: str | None
) -> tuple[str, str]:
    """Upload ``package`` as version ``version_name`` of ``pipeline_name`` (created with this
    first version when it does not exist yet). Returns (pipeline id, version id)."""
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(
            str(package), pipeline_name=pipeline_name, namespace=namespace
        )
        pipeline_id = pipeline.pipeline_id
        versions = client.list_pipeline_versions(pipeline_id).pipeline_versions or []
        first = versions[0]
        return pipeline_id, first.pipeline_version_id
    version = client.upload_pipeline_version(
        str(package), pipeline_version_name=version_name, pipeline_id=pipeline_id
    )
    return pipeline_id, version.pipeline_version_id
