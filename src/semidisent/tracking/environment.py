"""Provenance logged with every run: versions, device, git commit (never environment values)."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

# The commit an image was built from (components/Dockerfile: --build-arg GIT_COMMIT): images
# hold no .git, so this is the only record of their code.
COMMIT_ENV = "SEMIDISENT_GIT_COMMIT"
# MLflow's own tag for the code version (the UI's "Source" / "Version" columns).
MLFLOW_COMMIT_TAG = "mlflow.source.git.commit"

PACKAGES = (
    "semidisent",
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "mlflow",
    "dvc",
    "optuna",
    "kfp",
)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def device_description(device: str | None = None) -> str:
    import torch

    wants_cuda = (device or "auto") in ("auto", "cuda") or str(device).startswith("cuda")
    if wants_cuda and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.processor() or platform.machine()}"


def git_state(cwd: str | Path = ".") -> dict[str, str]:
    """Commit and whether the tree has uncommitted changes; in an image (``$SEMIDISENT_GIT_COMMIT``
    set at build time) the commit it was built from; empty when neither is known."""
    baked = os.environ.get(COMMIT_ENV, "").strip()
    if baked:
        return {"git_commit": baked, "git_source": "image"}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


@functools.lru_cache(maxsize=1)
def provenance_tags() -> dict[str, str]:
    """The git tags of every MLflow run this process opens (cached: one git call)."""
    state = git_state()
    if not state.get("git_commit"):
        return {}
    return {**state, MLFLOW_COMMIT_TAG: state["git_commit"]}
