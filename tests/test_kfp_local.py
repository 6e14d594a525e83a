"""``semidisent pipeline run-local``: the whole Kubeflow pipeline under kfp.local, end to end,
against a real MLflow server (sqlite backend, S3 artifacts on moto_server), with the data pulled
from a DVC remote on the same S3 endpoint; the registered model and its metrics are read back
through MlflowClient.

Tiny configuration (the CLI's built-in tiny budget, on the 192-image dSprites grid) so that the
run takes about a minute on two cores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, write_small_dsprites_npz

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPERIMENT = "kfp-local-e2e"
MODEL_NAME = "kfp-local-e2e-vae"


def _dvc_push(s3_endpoint: str, path: Path, remote: str) -> str:
    """Put ``path`` into a DVC 3 remote as `dvc push` lays it out (files/md5/xx/rest);
    returns the md5 a .dvc file / dvc.lock would record."""
    import boto3

    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    bucket, _, prefix = remote.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.upload_file(str(path), bucket, f"{prefix}/files/md5/{md5[:2]}/{md5[2:]}")
    return md5


def test_run_local_end_to_end(tmp_path, mlflow_server, s3_endpoint):
    from mlflow import MlflowClient

    npz = tmp_path / "dsprites_small.npz"
    write_small_dsprites_npz(npz)
    remote = "s3://dvc-remote/kfp-e2e"
    md5 = _dvc_push(s3_endpoint, npz, remote)
    cache = tmp_path / "data-cache" / "dsprites_small.npz"  # what the PVC holds in a cluster
    root = tmp_path / "kfp"
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server,
        "AWS_ENDPOINT_URL": s3_endpoint,  # the DVC remote (a cluster: --s3-endpoint-url)
        "OMP_NUM_THREADS": "1",
        "SEMIDISENT_ROOT": str(ROOT),  # components/ + pipelines/ (cwd is elsewhere)
    }
    proc = run_cli(
        "pipeline", "run-local", "--params", str(ROOT / "params.yaml"), "--root", str(root),
        "--dvc-remote", remote, "--data-version", md5,
        "-S", f"data.path={cache}", "-S", "supervision.n_labels=40",
        "-S", f"tracking.experiment={EXPERIMENT}", "-S", f"tracking.registered_model={MODEL_NAME}",
        "-S", "eval.metrics=[mig, sap, modularity]",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "pipeline finished" in proc.stdout
    assert cache.read_bytes() == npz.read_bytes()  # pulled from the DVC remote

    # --- the Kubeflow side: typed artifacts where the UI finds them
    (run_dir,) = [d for d in root.iterdir() if d.name.startswith("semidisent-")]
    report = json.loads((run_dir / "report" / "executor_output.json").read_text())
    html = (run_dir / "report" / "report_html").read_text()
    assert html.startswith("<!doctype html>") and "data:image/png;base64" in html
    assert "## Summary" in (run_dir / "report" / "report_md").read_text()
    model_uri = report["parameterValues"]["Output"]
    assert model_uri.startswith("models:/")
    ev = json.loads((run_dir / "evaluate" / "executor_output.json").read_text())
    ui_metrics = ev["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert "summary.mig" in ui_metrics
    train_out = json.loads((run_dir / "train" / "executor_output.json").read_text())
    model_meta = train_out["artifacts"]["model"]["artifacts"][0]["metadata"]
    search = json.loads((run_dir / "search-summary" / "executor_output.json").read_text())
    assert search["artifacts"]["metrics"]["artifacts"][0]["metadata"]["trials.complete"] == 2
    best = json.loads((run_dir / "search-summary" / "study" / "best_params.json").read_text())
    # train used the best configuration of the search, at the full (tiny) budget
    assert model_meta["beta"] == pytest.approx(best["train"]["beta"])
    assert model_meta["replacement_rate"] == pytest.approx(best["train"]["replacement_rate"])
    # the steps' scratch folders stay inside the run's folder (nothing left in /tmp)
    assert {p.name.split("-")[1] for p in (root / "work").iterdir()} == {
        "train", "model", "search", "report"
    }  # fmt: skip

    # --- the MLflow side, read back from the server
    client = MlflowClient(tracking_uri=mlflow_server)
    (version,) = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert version.source and version.run_id == model_meta["mlflow_run_id"]
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert float(run.data.params["train.beta"]) == pytest.approx(best["train"]["beta"])
    assert run.data.params["train.steps"] == "60"
    metrics = run.data.metrics
    for key in ("summary.mig", "summary.sap", "mig.discrete_mig"):
        assert key in metrics, sorted(metrics)
    assert any(k.startswith("loss") or k.startswith("train") for k in metrics)
    # every MLflow run of the pipeline carries its KFP run
    assert run.data.tags["kfp.run_name"] == run_dir.name
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "report")}
    assert {"report/report.html", "report/report.md"} <= artifacts
    # the search: one parent run with a nested run per trial, in the same experiment
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("semidisent.stage") == "search"]
    assert len(parents) == 1
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(trials) == 2
    # artifacts landed in the S3 store (moto) behind the server
    import boto3

    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint)
        .list_objects_v2(Bucket="mlflow-artifacts")
        .get("Contents", [])
    ]
    assert any(k.endswith("report/report.html") for k in keys)
    assert any(k.endswith("MLmodel") for k in keys)
