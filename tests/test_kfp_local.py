"""``semidisent pipeline run-local``: the whole Kubeflow pipeline under kfp.local, end to end,
against a real MLflow server (sqlite backend, S3 artifacts on moto_server), with the data pulled
from a DVC remote on the same S3 endpoint; the registered model and its metrics are read back
through MlflowClient.

It runs a model family other than the default, ``model.name = s2_factor_vae`` (a second network
with its own optimiser; a small discriminator, ``s2_factor_vae.discriminator_units=32``), with
FactorVAE's gamma in the search space, and then the same family through the CLI's own commands
(train the best trial again, evaluate, search): one end-to-end check that a user can do
everything with ``model.name: s2_factor_vae`` exactly as with the default, without a second
pipeline run. The default family stays covered end to end by the DVC pipeline test
(tests/test_dvc_pipeline.py) and the CLI tests of tests/test_training.py, test_evaluate.py and
test_search.py.

Tiny configuration (the CLI's built-in tiny budget, on the 192-image dSprites grid) so that the
run takes about a minute and a half on two cores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, write_small_dsprites_npz

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPERIMENT = "kfp-local-e2e"
MODEL_NAME = "kfp-local-e2e-vae"
# The family under test, with a small discriminator (dlib's is 6 x 1000), and its own key searched.
FAMILY = (
    "model.name=s2_factor_vae",
    "s2_factor_vae.discriminator_units=32",
    "search.space.s2_factor_vae.gamma={low: 5, high: 50, log: true}",
)


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
        *[a for o in FAMILY for a in ("-S", o)],
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
    assert model_uri == f"models:/{MODEL_NAME}/1"  # the registered version, not the logged model
    ev = json.loads((run_dir / "evaluate" / "executor_output.json").read_text())
    ui_metrics = ev["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert "summary.mig" in ui_metrics
    train_out = json.loads((run_dir / "train" / "executor_output.json").read_text())
    model_meta = train_out["artifacts"]["model"]["artifacts"][0]["metadata"]
    prep = json.loads((run_dir / "prepare" / "executor_output.json").read_text())
    data_meta = prep["artifacts"]["dataset"]["artifacts"][0]["metadata"]
    assert data_meta["dvc_remote"] == remote and data_meta["data_version"] == md5
    search = json.loads((run_dir / "search-summary" / "executor_output.json").read_text())
    assert search["artifacts"]["metrics"]["artifacts"][0]["metadata"]["trials.complete"] == 2
    best = json.loads((run_dir / "search-summary" / "study" / "best_params.json").read_text())
    # train used the best configuration of the search, at the full (tiny) budget: its family
    # and its family's searched key included
    assert best["model"] == {"name": "s2_factor_vae"} and set(best["s2_factor_vae"]) == {"gamma"}
    assert model_meta["model_name"] == "s2_factor_vae"
    assert model_meta["s2_factor_vae.gamma"] == pytest.approx(best["s2_factor_vae"]["gamma"])
    assert model_meta["s2_factor_vae.discriminator_units"] == 32
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
    assert run.data.params["model.name"] == "s2_factor_vae"
    gamma = best["s2_factor_vae"]["gamma"]
    assert float(run.data.params["s2_factor_vae.gamma"]) == pytest.approx(gamma)
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
    assert {r.data.params["model.name"] for r in trials} == {"s2_factor_vae"}
    assert parents[0].data.tags["best.model.name"] == "s2_factor_vae"
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

    # --- the same family through the CLI's own commands, on the pipeline's prepared data
    _cli_train_evaluate_search(tmp_path, run_dir, root, cache, best, mlflow_server, env)


def _cli_train_evaluate_search(
    tmp_path: Path,
    run_dir: Path,
    root: Path,
    data: Path,
    best: dict,
    mlflow_server: str,
    env: dict,
) -> None:
    """`semidisent train` with best_params.json's overrides at the search's steps trains the
    pipeline's best trial again (the same weights); `semidisent evaluate` scores it;
    `semidisent search` searches the family's key and registers its best model with its family."""
    import torch
    from mlflow import MlflowClient

    from semidisent.kfp_pipeline.local import TINY_OVERRIDES
    from semidisent.models.io import load_model

    prepared = run_dir / "prepare" / "dataset"
    sets = [*TINY_OVERRIDES, f"data.path={data}", "supervision.n_labels=40", *FAMILY]
    sets += ["tracking.experiment=kfp-local-e2e-cli", "tracking.registered_model=kfp-cli-vae"]
    args = ["--params", str(ROOT / "params.yaml"), *[a for o in sets for a in ("-S", o)]]

    def cli(*extra: str):
        return run_cli(*extra, cwd=tmp_path, env=env, check=True)

    # train: the best trial of the pipeline's search, again
    over = [a for o in [*best["overrides"], "train.steps=20"] for a in ("-S", o)]
    model_dir = tmp_path / "cli-model"
    proc = cli("train", *args, *over, "--prepared", str(prepared), "--out", str(model_dir), "-q")
    assert "trained 20 steps" in proc.stdout
    model, meta = load_model(model_dir / "model.pt")
    assert meta["model"]["name"] == "s2_factor_vae"
    assert meta["s2_factor_vae"]["gamma"] == best["s2_factor_vae"]["gamma"]
    (trial_model,) = (root / "work").glob(
        f"semidisent-search-*/trials/{best['trial']:05d}/model.pt"
    )
    original, _ = load_model(trial_model)
    for name, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name

    # evaluate it
    ev = tmp_path / "cli-eval"
    proc = cli("evaluate", *args, "-S", "eval.metrics=[mig]", "--prepared", str(prepared),
               "--model", str(model_dir / "model.pt"), "--out", str(ev), "-q")  # fmt: skip
    assert "mig" in json.loads((ev / "metrics.json").read_text())["summary"]

    # search: one p = 0 baseline trial of the family, its gamma searched
    out = tmp_path / "cli-search"
    storage = f"search.storage=sqlite:///{tmp_path}/cli-optuna.db"
    proc = cli("search", *args, "-S", storage, "-S", "search.n_trials=1",
               "--prepared", str(prepared), "--out", str(out), "-q")  # fmt: skip
    found = json.loads((out / "best_params.json").read_text())
    assert found["model"] == {"name": "s2_factor_vae"} and set(found["s2_factor_vae"]) == {"gamma"}
    assert found["train"]["replacement_rate"] == 0.0  # the baseline still runs first
    assert "model.name s2_factor_vae" in proc.stdout and "s2_factor_vae.gamma" in proc.stdout
    (version,) = MlflowClient(mlflow_server).search_model_versions("name = 'kfp-cli-vae'")
    assert version.tags["model.name"] == "s2_factor_vae"
    gamma = float(version.tags["s2_factor_vae.gamma"])
    assert gamma == pytest.approx(found["s2_factor_vae"]["gamma"])
