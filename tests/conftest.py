"""Shared fixtures: small official-format files written by the tests, paths, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The official dSprites traversal GIF (deepmind/dsprites-dataset, Apache-2.0: the licence lies
# beside it), shipped so that every clone runs the renderer's fidelity tests.
REFERENCE_GIF = ROOT / "tests" / "data" / "dsprites_reference.gif"
BIN = Path(sys.executable).parent

# MLflow defaults to ./mlflow.db in the working directory: never litter the repository. Tests
# that need a particular tracking URI set it themselves.
os.environ.setdefault(
    "MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='semidisent-mlflow-')}/mlflow.db"
)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    """Run the real console script, as a user would."""
    proc = subprocess.run(
        [str(BIN / "semidisent"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"semidisent {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def search_two_trials(
    common: list[str],
    prepared: Path,
    tmp_path: Path,
    space: str,
    steps: int = 4,
    env: dict | None = None,
) -> dict:
    """``semidisent search`` of a family: two trials of ``steps`` steps over ``space`` (a
    ``search.space`` value), minimising the training loss; both complete. Its summary."""
    run_cli("search", *common, "--prepared", str(prepared), "--out", str(tmp_path / "search"),
            "-S", "search.n_trials=2", "-S", f"search.steps={steps}", "-S", "search.reports=1",
            "-S", "search.objectives=[loss]", "-S", "search.directions=[minimize]",
            "-S", "search.baseline_trials=0",
            "-S", f"search.storage=sqlite:///{tmp_path}/optuna.db",
            "-S", f"search.space={space}", cwd=tmp_path, env=env, check=True)  # fmt: skip
    import json

    summary = json.loads((tmp_path / "search" / "search_summary.json").read_text())
    assert summary["trials"]["complete"] == 2
    return summary


def compile_family(
    params: list[str], family: str, key: str, value: str, tmp_path: Path, env: dict | None = None
) -> None:
    """``semidisent pipeline compile`` with ``model.name = family`` and ``family.key = value``:
    both are the compiled pipeline's parameter defaults."""
    import yaml

    out = tmp_path / "pipeline.yaml"
    run_cli("pipeline", "compile", *params, "-S", f"model.name={family}",
            "-S", f"{family}.{key}={value}", "--out", str(out),
            "--image", "registry.example/semidisent:abc", cwd=ROOT, env=env,
            check=True)  # fmt: skip
    spec = next(yaml.safe_load_all(out.read_text()))
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["model__name"]["defaultValue"] == family
    assert str(inputs[f"{family}__{key}"]["defaultValue"]) == value


# A reduced dSprites grid in the official npz format: (colour 1, shape 3, scale 2,
# orientation 2, posX 4, posY 4) = 192 images, pixels from the procedural renderer.
SMALL_DSPRITES_VALUES = {"scale": [0, 5], "orientation": [0, 10], "pos": [0, 10, 20, 31]}


def write_small_dsprites_npz(path: Path) -> np.ndarray:
    from semidisent.data.dsprites_render import render_factors

    sizes = [1, 3, 2, 2, 4, 4]
    classes = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(
        -1, 6
    )
    v = SMALL_DSPRITES_VALUES
    full = np.stack(
        [
            classes[:, 1],
            np.take(v["scale"], classes[:, 2]),
            np.take(v["orientation"], classes[:, 3]),
            np.take(v["pos"], classes[:, 4]),
            np.take(v["pos"], classes[:, 5]),
        ],
        axis=1,
    )
    imgs = (render_factors(full)[:, 0] > 0).astype(np.uint8)
    metadata = {
        "latents_sizes": np.array(sizes),
        "latents_names": ("color", "shape", "scale", "orientation", "posX", "posY"),
    }
    np.savez_compressed(
        path,
        imgs=imgs,
        latents_classes=classes,
        latents_values=classes.astype(np.float64),
        metadata=metadata,
    )
    return imgs


@pytest.fixture
def small_dsprites_npz(tmp_path: Path) -> Path:
    path = tmp_path / "dsprites_small.npz"
    write_small_dsprites_npz(path)
    return path


@pytest.fixture
def ieee_training(monkeypatch):
    """CUDA training in IEEE float32 on both paths, for tests of the fast path's mechanics
    (compiled step, CUDA graph, resume) against the eager step. The fast path turns TF32 on
    (``backends.fast_training_kernels``) and eager convolutions use cuDNN's default TF32: their
    10-bit rounding, which Adam turns into whole steps on entries whose gradient is about 0,
    is a precision choice, not a mechanics error (first GPU run: 55% of the entries beyond 5%
    of a step after 20 steps, DRMM priors 1.2e-3 apart)."""
    from semidisent import backends
    from semidisent.training import trainer

    monkeypatch.setattr(trainer, "fast_training_kernels", backends.ieee_float32)
    with backends.ieee_float32():
        yield


# ---------------------------------------------------------------- real services (integration)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto_server on a free loopback port, with the buckets the project uses."""
    import boto3

    from services import start_moto

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    svc = start_moto(tmp_path_factory.mktemp("moto"))
    s3 = boto3.client("s3", endpoint_url=svc.url)
    for bucket in ("mlflow-artifacts", "dvc-remote"):
        s3.create_bucket(Bucket=bucket)
    yield svc.url
    svc.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, s3_endpoint):
    """`mlflow server` with a sqlite backend and S3 (moto) artifacts."""
    from services import start_mlflow

    svc = start_mlflow(tmp_path_factory.mktemp("mlflow"), s3_endpoint=s3_endpoint)
    yield svc.url
    svc.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A PostgreSQL server from Debian's package; skips where the binaries are absent."""
    from services import postgres_bin, start_postgres

    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries not installed")
    svc = start_postgres(tmp_path_factory.mktemp("pg"))
    yield svc.url
    svc.stop()


# ---------------------------------------------------------------- training (tiny prepared dSprites)

# The 192-image official-format grid (shape 3, scale 2, orientation 2, posX 4, posY 4) with a
# 40-label pool (36 train, 4 validation), shared by the
# training and checkpoint tests: small enough that a step at batch 8 takes milliseconds.
SMALL_PREPARED_OVERRIDES = ("supervision.n_labels=40",)


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory) -> tuple[Path, list[str]]:
    """(artifact directory, the -S overrides that made it) for the small dSprites grid."""
    from semidisent.config import load_params
    from semidisent.stages.prepare import run_prepare

    root = tmp_path_factory.mktemp("small_prepared")
    npz = root / "dsprites_small.npz"
    write_small_dsprites_npz(npz)
    overrides = [f"data.path={npz}", *SMALL_PREPARED_OVERRIDES]
    run_prepare(load_params(None, overrides), root / "prepared", progress=False)
    return root / "prepared", overrides


# ---------------------------------------------------------------- search (PostgreSQL storage)


@pytest.fixture(scope="session")
def postgres_public():
    """Like ``postgres``, with the cluster outside pytest's base temp: run as root, the base temp
    is private (0700, root) and initdb, run as the postgres user, cannot reach a directory
    inside it. Returns the base URL (``services.create_database(url, name)`` makes a DB)."""
    import shutil
    import tempfile

    from services import postgres_bin, start_postgres

    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries not installed")
    workdir = Path(tempfile.mkdtemp(prefix="semidisent-pg-"))
    svc = start_postgres(workdir)
    yield svc.url
    svc.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_mlflow(tmp_path_factory, postgres_public, s3_endpoint):
    """`mlflow server` as docs/kubeflow.md deploys it: a PostgreSQL backend and S3 (moto)
    artifacts served through the server. One per session, shared by the tests that need it
    (each writes to its own experiment)."""
    from services import create_database, start_mlflow

    backend = create_database(postgres_public, "mlflow_server")
    svc = start_mlflow(
        tmp_path_factory.mktemp("mlflow_pg"), backend_uri=backend, s3_endpoint=s3_endpoint
    )
    yield svc.url
    svc.stop()
