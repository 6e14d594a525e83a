"""What a real cluster needs and kfp.local never checks (semidisent.kfp_pipeline.cluster,
sandbox, image), the data fetched from a DVC remote, the CPU budget of a pod, provenance and
redaction: fast checks of each piece (the pieces together: test_kfp_cluster_like.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from semidisent.config import load_params
from semidisent.errors import DataError
from semidisent.kfp_pipeline import cluster
from semidisent.kfp_pipeline import runtime as rt
from semidisent.kfp_pipeline.image import Source, skew
from semidisent.kfp_pipeline.parameters import arguments
from semidisent.kfp_pipeline.settings import ClusterSettings

IMAGE = "registry.example/semidisent:abc"


@pytest.fixture
def pod(monkeypatch):
    """Inside a pod: KUBERNETES_SERVICE_HOST set, nothing configured."""
    for var in ("MLFLOW_TRACKING_URI", rt.STORAGE_ENV, cluster.SETTINGS_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(cluster.IN_CLUSTER_ENV, "10.96.0.1")
    return monkeypatch


# ------------------------------------------------------------------ compile / submit time


def test_compile_refuses_what_cannot_work_on_a_cluster():
    defaults = load_params(None)
    assert cluster.compile_problems(defaults, ClusterSettings(image=IMAGE)) == []
    (placeholder,) = cluster.compile_problems(defaults, ClusterSettings())
    assert "placeholder" in placeholder and "--image" in placeholder
    local = load_params(None, ["tracking.uri=sqlite:///mlflow.db"])
    (problem,) = cluster.compile_problems(local, ClusterSettings(image=IMAGE))
    assert "tracking.uri = 'sqlite:///mlflow.db'" in problem and "ConfigMap" in problem
    # nothing could replace the defaults in the pods
    none = ClusterSettings(image=IMAGE, tracking_configmap="", mlflow_secret="", optuna_secret="")
    assert len(cluster.compile_problems(defaults, none)) == 2
    # a password inside a URL would land in the pipeline spec (and is never printed)
    pw = load_params(None, ["search.storage=postgresql+psycopg2://u:hunter22@db/optuna"])
    (problem,) = cluster.compile_problems(pw, ClusterSettings(image=IMAGE))
    assert "carries a password" in problem and "hunter22" not in problem
    (old,) = cluster.compile_problems(defaults, ClusterSettings(image=IMAGE, kfp_backend="1.8"))
    assert "--kfp-backend '1.8'" in old


# ------------------------------------------------------------------ in the pod


def test_first_step_refuses_pod_local_stores(pod):
    params = load_params(None)
    errors, _ = cluster.pod_problems(params)
    assert len(errors) == 2
    assert "$MLFLOW_TRACKING_URI unset" in errors[0] and "semidisent-tracking" in errors[0]
    assert "search.storage = 'sqlite:///optuna.db'" in errors[1]
    # configured through the ConfigMap and the secret: nothing to refuse
    pod.setenv("MLFLOW_TRACKING_URI", "http://mlflow.mlflow.svc.cluster.local:5000")
    pod.setenv(rt.STORAGE_ENV, "postgresql+psycopg2://optuna:pw@postgres/optuna")
    assert cluster.pod_problems(params) == ([], [])
    # the first step refuses before writing anything
    pod.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(cluster.ClusterError, match=r"^tracking.uri is null"):
        rt.write_params(arguments(params), _Artifact(Path("/nonexistent/params")))


def test_outside_a_cluster_nothing_is_refused(monkeypatch):
    monkeypatch.delenv(cluster.IN_CLUSTER_ENV, raising=False)
    assert cluster.pod_problems(load_params(None)) == ([], [])
    rt.check_shared_storage(load_params(None), 2)  # one machine shares the sqlite file


def test_image_skew_is_an_error_and_unknown_provenance_a_warning(pod):
    compiled = Source("0.1.0", "a" * 40)
    assert skew(compiled, Source("0.1.0", "a" * 40)) == (None, None)
    error, _ = skew(compiled, Source("0.1.0", "b" * 40))
    assert "image skew" in error and "aaaaaaaaaaaa" in error and "bbbbbbbbbbbb" in error
    error, _ = skew(compiled, Source("0.2.0", "a" * 40))
    assert "semidisent 0.2.0" in error
    assert "GIT_COMMIT" in skew(compiled, Source("0.1.0", ""))[1]
    # in the first step: the compiled source travels in the task's settings
    pod.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    pod.setenv(rt.STORAGE_ENV, "postgresql+psycopg2://db/optuna")
    pod.setenv("SEMIDISENT_GIT_COMMIT", "b" * 40)
    settings = ClusterSettings(image=IMAGE, source=json.dumps(compiled.encode()))
    pod.setenv(cluster.SETTINGS_ENV, cluster.settings_env(settings))
    (error,), _ = cluster.pod_problems(load_params(None))
    assert error.startswith("image skew")


def test_a_gpu_step_without_a_gpu_refuses_to_train_on_the_cpu(pod):
    from semidisent.training import runtime as training_runtime

    pod.setattr(training_runtime, "cuda_unusable_reason", lambda: "no CUDA device visible")
    pod.setenv(cluster.SETTINGS_ENV, cluster.settings_env(ClusterSettings(), gpus=1))
    with pytest.raises(cluster.ClusterError, match=r"train\.device = auto .* requested 1 nvidia"):
        cluster.check_gpu("auto", "train.device")
    cluster.check_gpu("cpu", "train.device")  # the CPU on purpose
    pod.setenv(cluster.SETTINGS_ENV, cluster.settings_env(ClusterSettings(), gpus=0))
    cluster.check_gpu("auto", "train.device")  # no GPU requested: the CPU is expected


def test_first_write_failure_names_the_path_and_the_fix(pod, tmp_path):
    s = ClusterSettings(data_pvc="semidisent-data", data_mount=str(tmp_path))
    pod.setenv(cluster.SETTINGS_ENV, cluster.settings_env(s))

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    pod.setattr(Path, "mkdir", denied)
    target = tmp_path / "checkpoints" / "run"
    with pytest.raises(cluster.ClusterError) as e:
        cluster.writable_dir(target, "checkpoints to")
    message = str(e.value)
    assert str(target) in message and "Permission denied" in message
    assert "semidisent-data" in message and "PVC ownership" in message
    assert "\n" not in message


# ------------------------------------------------------------------ the sandbox


def test_sandbox_maps_secrets_and_configmaps_as_the_platform_spec_says(tmp_path):
    from semidisent.kfp_pipeline.sandbox import executor_label, platform_env, read_manifests

    manifests = tmp_path / "ns.yaml"
    manifests.write_text(
        "kind: Secret\nmetadata: {name: s3}\ndata: {AWS_ACCESS_KEY_ID: a2V5}\n---\n"
        "kind: ConfigMap\nmetadata: {name: tracking}\ndata: {MLFLOW_TRACKING_URI: 'http://m'}\n"
    )
    ns = read_manifests(manifests)
    config = {
        "secretAsEnv": [
            {"secretName": "s3", "optional": True,
             "keyToEnv": [{"secretKey": "AWS_ACCESS_KEY_ID", "envVar": "AWS_ACCESS_KEY_ID"}]},
            {"secretNameParameter": {"runtimeValue": {"constant": "absent"}}, "optional": True,
             "keyToEnv": [{"secretKey": "url", "envVar": "SEMIDISENT_SEARCH_STORAGE"}]},
        ],
        "configMapAsEnv": [
            {"configMapName": "tracking", "keyToEnv": [
                {"configMapKey": "MLFLOW_TRACKING_URI", "envVar": "MLFLOW_TRACKING_URI"}]},
        ],
    }  # fmt: skip
    assert platform_env(config, ns) == {
        "AWS_ACCESS_KEY_ID": "key",
        "MLFLOW_TRACKING_URI": "http://m",
    }
    del config["secretAsEnv"][1]["optional"]  # a required secret that does not exist
    with pytest.raises(Exception, match="secret 'absent' not found"):
        platform_env(config, ns)
    assert executor_label(["sh", "-c", "x", "--function_to_execute", "search_worker"]) == (
        "exec-search-worker"
    )


# ------------------------------------------------------------------ data, CPUs, provenance


def test_dvc_fetch_verifies_the_md5(tmp_path):
    remote = tmp_path / "remote"
    data = b"dsprites bytes"
    md5 = hashlib.md5(data).hexdigest()
    obj = remote / "files" / "md5" / md5[:2] / md5[2:]
    obj.parent.mkdir(parents=True)
    obj.write_bytes(b"truncated")
    target = tmp_path / "pvc" / "data.npz"
    params = load_params(None, [f"data.path={target}"])
    with pytest.raises(DataError, match=f"not the {md5} DVC recorded"):
        rt.fetch_dvc_data(params, str(remote), md5)
    assert not target.exists() and not list(target.parent.glob(".*part*"))
    obj.write_bytes(data)
    rt.fetch_dvc_data(params, str(remote), md5)
    assert target.read_bytes() == data
    # a directory version: its listing and every file verified
    listing = json.dumps([{"md5": md5, "relpath": "a.bin"}]).encode()
    dir_md5 = hashlib.md5(listing).hexdigest() + ".dir"
    d = remote / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
    d.parent.mkdir(parents=True, exist_ok=True)
    d.write_bytes(listing)
    out = tmp_path / "pvc" / "dir"
    rt.fetch_dvc_data(load_params(None, [f"data.path={out}"]), str(remote), dir_md5)
    assert (out / "a.bin").read_bytes() == data


def test_cpu_workers_follow_the_cgroup_quota(tmp_path):
    from semidisent.cpus import available_cpus, cgroup_cpu_limit

    (tmp_path / "cpu.max").write_text("150000 100000\n")  # cgroup v2: a 1.5-CPU limit
    assert cgroup_cpu_limit(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert available_cpus(v1) == 1


def test_the_image_commit_is_the_runs_commit(monkeypatch):
    from semidisent.tracking import environment

    monkeypatch.setenv(environment.COMMIT_ENV, "c" * 40)
    assert environment.git_state("/") == {"git_commit": "c" * 40, "git_source": "image"}
    environment.provenance_tags.cache_clear()
    try:
        tags = environment.provenance_tags()
        assert tags["mlflow.source.git.commit"] == "c" * 40
    finally:
        environment.provenance_tags.cache_clear()


def test_registered_model_uri_names_the_version():
    assert rt.registered_uri({"name": "vae", "version": "3", "model_uri": "models:/m-1"}) == (
        "models:/vae/3"
    )
    assert rt.registered_uri({"name": None, "version": None, "model_uri": "models:/m-1"}) == (
        "models:/m-1"
    )


def test_data_params_carry_the_data_sections_only():
    params = load_params(None, ["train.beta=8", "supervision.n_labels=40"])
    text = rt.data_params(params)
    assert set(json.loads(text)) == {"data", "supervision"}
    assert text == rt.data_params(load_params(None, ["supervision.n_labels=40"]))  # cache key
    assert rt.params_from_data(text).supervision == params.supervision


def test_printed_params_never_show_a_password():
    proc = run_cli(
        "params", "tracking", "search",
        "-S", "tracking.uri=http://alice:s3cr3t-pw@mlflow:5000",
        "-S", "search.storage=postgresql+psycopg2://optuna:hunter22@db/optuna",
        cwd=ROOT, check=True,
    )  # fmt: skip
    assert "s3cr3t-pw" not in proc.stdout and "hunter22" not in proc.stdout
    assert "http://***@mlflow:5000" in proc.stdout
    assert "postgresql+psycopg2://***@db/optuna" in proc.stdout
    # nor an error message quoting one
    proc = run_cli(
        "pipeline", "compile", "--image", IMAGE, "--out", "/dev/null",
        "-S", "search.storage=postgresql+psycopg2://optuna:hunter22@db/optuna", cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and "hunter22" not in proc.stderr + proc.stdout


class _Artifact:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.metadata: dict = {}
