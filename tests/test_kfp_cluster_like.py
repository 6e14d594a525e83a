"""The pipeline under kfp.local, but with each step isolated as its pod would be
(``semidisent pipeline run-local --cluster-like``, kfp_pipeline.sandbox): its own empty working
directory, HOME and TMPDIR, nothing of the caller's environment (this test sets a decoy
``MLFLOW_TRACKING_URI`` and AWS credentials that must not be used), ``KUBERNETES_SERVICE_HOST``
set, and the secrets / ConfigMap the compiled platform spec maps into each step, read from the
Kubernetes manifests docs/kubeflow.md has users apply.

What plain kfp.local hides and this shows:

- the default params (sqlite tracking store and Optuna study, shared through the working
  directory) are refused by the first step, in one line, before any other step runs;
- with the services configured as the docs say (``mlflow server`` on PostgreSQL with S3
  artifacts on moto, the study on PostgreSQL, the data on a DVC remote on S3) the whole
  pipeline passes, and the MLflow server holds what a cluster run leaves there: the search's
  parent run with the trials nested under it, the final run with the code's commit, the model
  registered as ``models:/<name>/<version>``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, write_small_dsprites_npz

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPERIMENT = "kfp-cluster-like"
MODEL_NAME = "kfp-cluster-like-vae"


def _caller_env(tmp_path: Path) -> dict[str, str]:
    """What the developer's shell has, which no pod has: must not reach the steps."""
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'decoy' / 'mlflow.db'}",
        "AWS_ACCESS_KEY_ID": "decoy-key",
        "AWS_SECRET_ACCESS_KEY": "decoy-secret",
        "SEMIDISENT_SEARCH_STORAGE": f"sqlite:///{tmp_path / 'decoy' / 'optuna.db'}",
        "OMP_NUM_THREADS": "1",
        "SEMIDISENT_ROOT": str(ROOT),
    }


def _steps_ran(root: Path) -> set[str]:
    (run_dir,) = [d for d in root.iterdir() if d.name.startswith("semidisent-")]
    return {d.name for d in run_dir.iterdir() if (d / "executor_output.json").exists()}


def test_default_params_are_refused_before_any_step_runs(tmp_path):
    root = tmp_path / "kfp"
    proc = run_cli(
        "pipeline", "run-local", "--cluster-like", "--params", str(ROOT / "params.yaml"),
        "--root", str(root), cwd=tmp_path, env=_caller_env(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "failed at step validate-params" in proc.stderr
    # One line each, saying what to configure.
    (tracking,) = [
        line for line in proc.stdout.splitlines() if "semidisent validate params:" in line
    ]
    assert "is a file inside this pod" in tracking
    assert "ConfigMap semidisent-tracking" in tracking and "MLFLOW_TRACKING_URI" in tracking
    assert "search.storage = 'sqlite:///optuna.db'" in tracking
    assert "secret semidisent-optuna" in tracking
    assert "Traceback" not in proc.stdout
    assert _steps_ran(root) == set()  # validate failed; prepare never started
    assert not (tmp_path / "decoy").exists()


def _manifests(path: Path, mlflow_url: str, storage: str) -> Path:
    """The Secrets and the ConfigMap of docs/kubeflow.md step 2, as manifests."""
    docs = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "semidisent-s3"},
         "stringData": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "semidisent-optuna"},
         "stringData": {"url": storage}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "semidisent-tracking"},
         "data": {"MLFLOW_TRACKING_URI": mlflow_url}},
    ]  # fmt: skip
    import yaml

    path.write_text(yaml.safe_dump_all(docs))
    return path


def test_whole_pipeline_passes_with_the_documented_services(
    tmp_path, pg_mlflow, postgres_public, s3_endpoint
):
    import boto3
    from mlflow import MlflowClient

    from services import create_database

    # The data on a DVC remote (S3), as `dvc push` lays it out.
    npz = tmp_path / "dsprites_small.npz"
    write_small_dsprites_npz(npz)
    md5 = hashlib.md5(npz.read_bytes()).hexdigest()
    remote = "s3://dvc-remote/cluster-like"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.upload_file(str(npz), "dvc-remote", f"cluster-like/files/md5/{md5[:2]}/{md5[2:]}")

    storage = create_database(postgres_public, "optuna_cluster_like")
    manifests = _manifests(tmp_path / "namespace.yaml", pg_mlflow, storage)
    root = tmp_path / "kfp"
    cache = tmp_path / "pvc" / "dsprites_small.npz"
    proc = run_cli(
        "pipeline", "run-local", "--cluster-like", str(manifests),
        "--params", str(ROOT / "params.yaml"), "--root", str(root),
        "--dvc-remote", remote, "--data-version", md5, "--s3-endpoint-url", s3_endpoint,
        "-S", f"data.path={cache}", "-S", "supervision.n_labels=40",
        "-S", f"tracking.experiment={EXPERIMENT}", "-S", f"tracking.registered_model={MODEL_NAME}",
        "-S", "eval.metrics=[mig]", "-S", "eval.random_baseline=[mig]",
        "-S", "eval.few_label=false",
        cwd=tmp_path, env=_caller_env(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert f"registered model models:/{MODEL_NAME}/1" in proc.stdout
    assert not (tmp_path / "decoy").exists()  # the caller's tracking URI / study never used

    # Each step ran in its own empty directories; none left a pod-local store behind.
    pods = sorted((root / "pods").iterdir())
    labels = {p.name.split("-", 1)[1] for p in pods}
    assert labels == {
        "exec-validate-params", "exec-prepare", "exec-search-init", "exec-search-worker",
        "exec-search-summary", "exec-train", "exec-evaluate", "exec-report",
    }  # fmt: skip
    assert len(pods) == 9  # two search workers
    assert not list(root.glob("pods/*/**/mlflow.db")) and not list(root.glob("pods/*/**/*.db"))

    (run_dir,) = [d for d in root.iterdir() if d.name.startswith("semidisent-")]
    prep = json.loads((run_dir / "prepare" / "executor_output.json").read_text())
    meta = prep["artifacts"]["dataset"]["artifacts"][0]["metadata"]
    assert meta["dvc_remote"] == remote and meta["data_version"] == md5
    assert cache.read_bytes() == npz.read_bytes()

    # The MLflow server holds the run as a cluster run leaves it.
    client = MlflowClient(pg_mlflow)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("semidisent.stage") == "search"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 2
    version = client.get_model_version(MODEL_NAME, "1")
    final = client.get_run(version.run_id)
    assert final.info.status == "FINISHED"
    from semidisent.tracking.environment import git_state

    commit = git_state(ROOT)["git_commit"]
    for run in (final, parent, *trials):
        assert run.data.tags.get("mlflow.source.git.commit") == commit, run.info.run_name
    assert "summary.mig" in final.data.metrics
