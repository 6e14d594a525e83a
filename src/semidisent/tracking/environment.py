"""Provenance logged with every run: versions, device, git commit (never environment values)."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

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
    """Commit and whether the tree has uncommitted changes; empty outside a git checkout."""

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
