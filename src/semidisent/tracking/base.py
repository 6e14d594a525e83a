"""The tracking interface every stage logs through; a no-op unless tracking is configured.

Science modules receive a :class:`Tracker` and never import MLflow. The MLflow implementation
(:mod:`semidisent.tracking.mlflow_tracker`) must never make training fail: it buffers or retries
and reports problems at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


class Tracker:
    """Base class and null tracker: every method does nothing."""

    enabled = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Flat or nested parameters (nested keys are joined with dots)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Scalars; called every ``log_every`` steps by training (host sync happens there only)."""

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file or directory (pictures, metrics.json, stats)."""

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("FAILED" if exc_type else "FINISHED")


NULL_TRACKER = Tracker()
