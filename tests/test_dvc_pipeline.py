"""The tracked, versioned pipeline end to end: `dvc repro` of the project's own dvc.yaml on a tiny
configuration, against a real `mlflow server` (sqlite backend, S3 artifacts on moto_server) and a
real S3-compatible DVC remote; everything is read back through MlflowClient and boto3.

The tests of this module share one project (a git + DVC repository in a temporary directory) and
run in file order: repro, no-op repro, a parameter change, an experiment, push/pull, a killed
repro that resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import write_small_dsprites_npz

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Unique strings standing for real credentials: they must never reach MLflow or an artifact.
SECRET_AWS = "s3cr3t-AWS-never-logged-7f3a"
SECRET_MLFLOW = "s3cr3t-MLFLOW-never-logged-91c2"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

TINY = {
    "data.path": "raw/dsprites_small.npz",
    "supervision.n_labels": 40,
    "train.steps": 40,
    "train.batch_size": 16,
    "train.checkpoint_every": 10,
    "train.log_every": 5,
    "eval.sample_scale": 0.01,
    "eval.metrics": ["mig", "dci", "sap"],
    "eval.batch_size": 256,
}


def _set(doc: dict, dotted: str, value) -> None:
    section, key = dotted.split(".")
    doc[section][key] = value


def _run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_server):
    """A fresh DVC project made of the repository's dvc.yaml, params.yaml and sources."""
    repo = tmp_path_factory.mktemp("dvc_project")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "raw").mkdir()
    write_small_dsprites_npz(repo / "raw" / "dsprites_small.npz")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in TINY.items():
        _set(params, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        # Credentials the way users pass them: in the environment, and inside the URI. The
        # servers here accept any (moto) or none (mlflow), which is what lets the test see
        # whether they leak.
        "MLFLOW_TRACKING_URI": mlflow_server.replace("://", f"://ci:{SECRET_MLFLOW}@"),
        "MLFLOW_TRACKING_PASSWORD": SECRET_MLFLOW,
        "MLFLOW_TRACKING_USERNAME": "ci",
        "AWS_SECRET_ACCESS_KEY": SECRET_AWS,
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    _run(["git", "init", "-q"], repo, env)
    _run([str(BIN / "dvc"), "init", "-q"], repo, env)
    _run([str(BIN / "dvc"), "config", "core.autostage", "true"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-q", "-m", "tiny project"], repo, env)
    return repo, env


def dvc(project, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    repo, env = project
    return _run([str(BIN / "dvc"), *args], repo, env, check=check)


def _client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(url)


def test_repro_runs_every_stage_and_logs_one_complete_mlflow_run(project, mlflow_server):
    repo, _ = project
    out = dvc(project, "repro", "report").stdout
    for stage in ("prepare", "train", "evaluate", "report"):
        assert f"Running stage '{stage}'" in out
    manifest = json.loads((repo / "data/prepared/manifest.json").read_text())
    metrics = json.loads((repo / "eval/metrics.json").read_text())
    assert {"mig", "dci", "sap"} <= set(metrics)
    assert set(metrics["random_encoder"]) == {"mig", "dci"}  # the baseline, same settings
    assert (repo / "reports/report.html").stat().st_size > 1000
    # Scores on fewer points than the study's say so next to them (sample_scale 0.01 here).
    assert "Scores at eval.sample_scale 0.01 (1% of" in (repo / "reports/report.md").read_text()
    assert "Scores at eval.sample_scale 0.01" in (repo / "reports/report.html").read_text()
    run_file = json.loads((repo / "models/default/mlflow_run.json").read_text())

    client = _client(mlflow_server)
    run = client.get_run(run_file["run_id"])
    assert run.info.status == "FINISHED"
    # all params, one run for all stages
    assert run.data.params["train.beta"] == "4.0"
    assert run.data.params["supervision.n_labels"] == "40"
    assert run.data.tags["semidisent.evaluated"] == "true"
    assert "version.torch" in run.data.tags and "device" in run.data.tags
    # the data version and the supervision mask as dataset inputs
    digests = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert manifest["content_sha256"].startswith(digests[manifest["dataset"]["name"]])
    assert manifest["supervision"]["mask_sha256"].startswith(digests["supervision-mask"])
    assert run.data.tags["data.dvc_md5"]  # the md5 recorded in dvc.lock
    # per-step curves, final metrics, pictures, the model
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) >= 4 and sorted(m.step for m in history) == [m.step for m in history]
    assert run.data.metrics["mig.discrete_mig"] == pytest.approx(metrics["mig"]["discrete_mig"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plots", "training", "report"} <= artifacts
    pictures = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert any(p.endswith(".png") for p in pictures)
    # registered with its metrics; loads back with encode/decode
    registered = json.loads((repo / "reports/registered_model.json").read_text())
    version = client.get_model_version(registered["name"], registered["version"])
    assert version.run_id == run.info.run_id
    assert float(version.tags["mig"]) == pytest.approx(metrics["summary"]["mig"], abs=1e-5)
    import mlflow.pytorch
    import torch

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        model = mlflow.pytorch.load_model(f"models:/{registered['name']}/{registered['version']}")
    finally:
        mlflow.set_tracking_uri(previous)
    mu, _ = model.encode(torch.zeros(2, 1, 64, 64))
    assert mu.shape == (2, 10)
    assert model.decode(mu).shape == (2, 1, 64, 64)


def test_second_repro_does_nothing(project):
    t0 = time.perf_counter()
    out = dvc(project, "repro", "report").stdout
    seconds = time.perf_counter() - t0
    assert "Running stage" not in out, out
    print(f"no-op dvc repro: {seconds:.1f} s")


def test_changing_a_parameter_reruns_only_what_depends_on_it(project):
    repo, env = project
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-q", "-m", "first repro"], repo, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["eval"]["seed"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(project, "repro", "report").stdout
    assert "Running stage 'evaluate'" in out and "Running stage 'report'" in out
    assert "Running stage 'train'" not in out and "Running stage 'prepare'" not in out
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-q", "-m", "eval seed 1"], repo, env)


def test_exp_run_with_a_new_beta_and_exp_show(project, mlflow_server):
    out = dvc(project, "exp", "run", "-S", "train.beta=8", "report").stdout
    assert "Running stage 'train'" in out and "Running stage 'prepare'" not in out
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    betas = []
    for baseline in shown:
        for exp in [baseline, *[e for x in baseline.get("experiments") or [] for e in x["revs"]]]:
            data = (exp.get("data") or {}).get("params", {}).get("params.yaml", {}).get("data", {})
            if data:
                betas.append(data["train"]["beta"])
    assert 8 in betas and 4.0 in betas
    runs = _client(mlflow_server).search_runs(
        [_client(mlflow_server).get_experiment_by_name("semidisent").experiment_id],
        "params.`train.beta` = '8.0'",
    )
    assert runs, "the experiment's run is in MLflow beside the baseline's"


def test_push_and_pull_through_an_s3_remote(project, s3_endpoint):
    import boto3

    repo, _ = project
    dvc(project, "remote", "add", "-f", "-d", "store", "s3://dvc-remote/semidisent")
    dvc(project, "remote", "modify", "store", "endpointurl", s3_endpoint)
    dvc(project, "push")
    objects = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket="dvc-remote", Prefix="semidisent/"
    )
    assert objects["KeyCount"] > 5
    # a colleague's clone: no cache, no outputs
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data" / "prepared")
    (repo / "models/default/model.pt").unlink()
    dvc(project, "pull")
    from semidisent.artifacts.prepared import load_prepared
    from semidisent.config import load_params

    load_prepared(repo / "data/prepared", load_params(repo / "params.yaml"), verify=True)
    assert (repo / "models/default/model.pt").exists()
    assert "Running stage" not in dvc(project, "repro", "report").stdout


def test_killed_repro_resumes_training_in_the_same_mlflow_run(project):
    repo, env = project
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["steps"] = 400
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ckdir = repo / "models/default/checkpoints"
    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "report"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            steps = [int(p.stem.split("-")[1]) for p in ckdir.glob("ckpt-*.pt")]
            if any(40 < s < 400 for s in steps):
                break
            assert proc.poll() is None, "dvc repro ended before it could be killed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = max(int(p.stem.split("-")[1]) for p in ckdir.glob("ckpt-*.pt"))
    run_id = json.loads((ckdir / "mlflow_run.json").read_text())["run_id"]
    dvc(project, "repro", "report")
    stats = json.loads((repo / "models/default/train_stats.json").read_text())
    assert stats["resumed_from_step"] >= killed_at > 40
    assert stats["steps"] == 400
    assert json.loads((repo / "models/default/mlflow_run.json").read_text())["run_id"] == run_id


def test_credentials_never_reach_mlflow_or_an_artifact(project, mlflow_server):
    repo, _ = project
    client = _client(mlflow_server)
    exp = client.get_experiment_by_name("semidisent")
    runs = client.search_runs([exp.experiment_id])
    assert runs
    secrets = (SECRET_AWS, SECRET_MLFLOW)
    for run in runs:
        for value in [*run.data.params.values(), *run.data.tags.values()]:
            assert not any(s in value for s in secrets)
        local = Path(client.download_artifacts(run.info.run_id, "", str(repo / "downloaded")))
        for path in local.rglob("*"):
            if path.is_file():
                blob = path.read_bytes()
                assert not any(s.encode() in blob for s in secrets), path
        shutil.rmtree(repo / "downloaded", ignore_errors=True)
    outputs = [*repo.glob("models/**/*.json"), *repo.glob("eval/*.json"), *repo.glob("reports/*")]
    for path in outputs:
        if path.is_file():
            assert not any(s.encode() in path.read_bytes() for s in secrets), path
