"""Open the tracker a stage logs to, from the ``tracking`` parameters."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config.schema import TrackingParams
from .base import Tracker


def resolve_tracking_uri(tp: TrackingParams, project_dir: str | Path = ".") -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else a sqlite database in the project directory."""
    if tp.uri:
        return tp.uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(project_dir).resolve() / 'mlflow.db').as_posix()}"


def open_tracker(
    tp: TrackingParams,
    *,
    run_name: str | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    backlog_path: str | Path | None = None,
    **kwargs: Any,
) -> Tracker:
    """A no-op tracker when tracking is disabled, else an MLflow run (created or continued)."""
    if not tp.enabled:
        return Tracker()
    from .environment import provenance_tags
    from .mlflow_tracker import MlflowTracker

    return MlflowTracker.start(
        resolve_tracking_uri(tp),
        tp.experiment,
        run_name=run_name,
        run_id=run_id,
        parent_run_id=parent_run_id,
        # the code of every run (search parents and trials too), as MLflow's UI reads it
        tags={**provenance_tags(), **tp.tags, **(tags or {})},
        backlog_path=backlog_path,
        **kwargs,
    )
