"""The components' image: what it is built from, and the check its build runs.

``python -m semidisent.kfp_pipeline.image`` is the last step of ``components/Dockerfile``: it
imports every module the components' bodies import and every runtime driver of the documented
configurations (PostgreSQL for Optuna and MLflow, boto3 / s3fs for S3), so an image that could
not open a PostgreSQL study or an S3 remote fails to build instead of failing in a pod.

Provenance: the image carries the commit it was built from (``--build-arg GIT_COMMIT=...`` ->
``$SEMIDISENT_GIT_COMMIT``; ``.git`` is not copied into it). The pipeline records the version and
commit it was compiled from, and its first step compares both with the image's (:func:`skew`).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

COMMIT_ENV = "SEMIDISENT_GIT_COMMIT"

# What the components' bodies import (components/semidisent_components.py) and what the stages
# they call import lazily for the documented configurations.
COMPONENT_MODULES = (
    "semidisent.kfp_pipeline.runtime",
    "semidisent.kfp_pipeline.cluster",
    "semidisent.stages.prepare",
    "semidisent.stages.search",
    "semidisent.stages.train",
    "semidisent.stages.evaluate",
    "semidisent.stages.report",
    "semidisent.search.study",
    "semidisent.search.objective",
    "semidisent.tracking.mlflow_tracker",
    "semidisent.tracking.model_registry",
)
# Runtime drivers: PostgreSQL (Optuna storage, MLflow backend), S3 (DVC remote, MLflow
# artifacts), MLflow's model flavour, and the KFP executor the pods run.
DRIVER_MODULES = (
    "psycopg2",
    "sqlalchemy.dialects.postgresql.psycopg2",
    "boto3",
    "s3fs",
    "fsspec",
    "optuna",
    "mlflow",
    "mlflow.pytorch",
    "kfp.dsl.executor_main",
    "torch",
)


@dataclass(frozen=True)
class Source:
    """The code a pipeline was compiled from, or an image was built from."""

    version: str
    commit: str = ""  # "" = unknown
    dirty: bool = False

    def text(self) -> str:
        commit = self.commit[:12] if self.commit else "unknown commit"
        dirty = ", uncommitted changes" if self.dirty else ""
        return f"semidisent {self.version} ({commit}{dirty})"

    def encode(self) -> dict[str, object]:
        return {"version": self.version, "commit": self.commit, "dirty": self.dirty}

    @classmethod
    def decode(cls, value: object) -> Source | None:
        if not isinstance(value, dict) or not value.get("version"):
            return None
        return cls(str(value["version"]), str(value.get("commit") or ""), bool(value.get("dirty")))


def source_text(encoded: str) -> str:
    """The words for ``ClusterSettings.source`` (JSON of :meth:`Source.encode`)."""
    import json

    source = Source.decode(json.loads(encoded or "null"))
    return source.text() if source else "unknown code"


def installed_version() -> str:
    from .. import __version__

    return __version__


def image_source() -> Source:
    """This process's package and the commit baked into the image (unknown outside one)."""
    return Source(installed_version(), os.environ.get(COMMIT_ENV, "").strip())


def checkout_source(root: str | Path) -> Source:
    """The checkout the pipeline is compiled from: its package version and git commit."""
    from ..tracking.environment import git_state

    state = git_state(root)
    return Source(
        installed_version(), state.get("git_commit", ""), state.get("git_dirty") == "true"
    )


def skew(compiled: Source, image: Source) -> tuple[str | None, str | None]:
    """(error, warning) of running a pipeline compiled from ``compiled`` in ``image``."""
    fix = (
        "build and push the image from the checkout you compile from (docs/kubeflow.md step 1) "
        "and pass its tag with --image"
    )
    if compiled.version != image.version or (
        compiled.commit and image.commit and compiled.commit != image.commit
    ):
        return (
            f"image skew: the pipeline was compiled from {compiled.text()} but the image runs "
            f"{image.text()}; {fix}",
            None,
        )
    if compiled.commit and not image.commit:
        return None, (
            f"the image does not say which commit it was built from (no ${COMMIT_ENV}); build it "
            "with --build-arg GIT_COMMIT=$(git rev-parse HEAD) so runs record their code"
        )
    if compiled.dirty:
        return None, (
            f"the pipeline was compiled from a checkout with uncommitted changes "
            f"({compiled.text()}); the image holds the commit only"
        )
    return None, None


def check_imports() -> list[str]:
    """Import everything the pods need; returns ``name version`` lines. Raises ImportError."""
    lines = []
    for name in (*DRIVER_MODULES, *COMPONENT_MODULES):
        module = importlib.import_module(name)
        version = getattr(module, "__version__", "")
        if version and "." not in name:
            lines.append(f"{name} {version}")
    return lines


def main() -> int:
    """The image build's last check (components/Dockerfile)."""
    try:
        lines = check_imports()
    except ImportError as e:
        print(f"semidisent image: error: cannot import {e.name}: {e}", file=sys.stderr)
        return 1
    print(f"{image_source().text()}: " + ", ".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
