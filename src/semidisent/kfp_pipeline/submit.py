"""``semidisent pipeline submit``: compile, then create a run on a Kubeflow Pipelines API."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.schema import Params
from .compile import compile_pipeline
from .parameters import changed_arguments
from .settings import ClusterSettings


@dataclass(frozen=True)
class Submitted:
    run_id: str
    url: str
    arguments: dict[str, Any]


def run_url(host: str, run_id: str) -> str:
    """The run's page in the Kubeflow Pipelines UI (what kfp.Client prints)."""
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


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
    client_factory: Callable[..., Any] | None = None,
) -> Submitted:
    """Compile the pipeline with ``base``'s values as defaults and create a run with the
    arguments of ``run`` that differ (so the UI shows what this run changed).

    Both are validated params already: an invalid value was refused before this point.
    """
    if client_factory is None:
        import kfp

        client_factory = kfp.Client
    args = {**changed_arguments(base, run), **(extra_arguments or {})}
    with tempfile.TemporaryDirectory(prefix="semidisent-submit-") as tmp:
        package = compile_pipeline(base, settings, Path(tmp) / "semidisent.yaml")
        client = client_factory(
            host=host, existing_token=token, **({"namespace": namespace} if namespace else {})
        )
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=args,
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            enable_caching=enable_caching,
        )
    return Submitted(run_id=result.run_id, url=run_url(host, result.run_id), arguments=args)
