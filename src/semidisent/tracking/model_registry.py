"""Log a trained VAE to MLflow so that it loads back whole, and register it with its metrics.

``mlflow.pytorch.log_model`` defaults to ``serialization_format="pt2"`` (torch.export), which
keeps only ``forward``: a VAE's ``encode`` / ``decode`` would be lost. The pickle format keeps
the :class:`semidisent.models.VAE` object, whose class is importable wherever the package is
installed (the component image, a user's environment), so
``mlflow.pytorch.load_model(uri).encode(x)`` works.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .mlflow_tracker import _client_settings, flatten

log = logging.getLogger(__name__)

TRACKING_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class RegisteredModel:
    model_uri: str
    name: str | None
    version: str | None


@contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (log_model) pointed at ``uri`` for the block only.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment, so
    without the restore every later run and subprocess of the caller would log to this URI."""
    import mlflow

    env = os.environ.get(TRACKING_ENV)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if env is None:
            os.environ.pop(TRACKING_ENV, None)
        else:
            os.environ[TRACKING_ENV] = env


def log_and_register(
    tracking_uri: str,
    run_id: str,
    model_path: str | Path,
    registered_name: str | None,
    metrics: Mapping[str, Any],
    description: str = "",
    tags: Mapping[str, str] | None = None,
) -> RegisteredModel:
    """Log ``model.pt`` under the run (pickle flavour) and register a new version of
    ``registered_name`` (when given), tagged with the flat metrics and ``tags`` (text, e.g.
    the search's best trial's model.name and keys)."""
    _client_settings()
    import mlflow
    import mlflow.pytorch
    import torch

    from ..models.io import load_model

    model, _ = load_model(model_path)
    example = torch.zeros((1, model.config.in_channels, 64, 64)).numpy()
    with _fluent_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            serialization_format="pickle",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "semidisent"],
            input_example=example,
            registered_model_name=registered_name,
        )
    version = getattr(info, "registered_model_version", None)
    if registered_name and version is not None:
        client = mlflow.MlflowClient(tracking_uri)
        for key, value in flatten(metrics).items():
            if isinstance(value, (int, float)):
                client.set_model_version_tag(registered_name, str(version), key, f"{value:.6g}")
        for key, text in (tags or {}).items():
            client.set_model_version_tag(registered_name, str(version), key, str(text))
        client.set_model_version_tag(registered_name, str(version), "run_id", run_id)
        if description:
            client.update_model_version(registered_name, str(version), description=description)
    return RegisteredModel(
        info.model_uri, registered_name, None if version is None else str(version)
    )
