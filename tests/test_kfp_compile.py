"""The compiled Kubeflow pipeline: structure, GPUs, secrets, tolerations, PVC, parameter
defaults (= params.yaml), and the refusal of invalid parameters before anything is compiled.

Compile-and-inspect only: the IR YAML is what a cluster receives, so checking it is checking
what the cluster will do with resources and Kubernetes settings (kfp.local ignores them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, run_cli
from semidisent.config import load_params
from semidisent.errors import ParamsError
from semidisent.kfp_pipeline.parameters import (
    arguments,
    changed_arguments,
    params_from_arguments,
    pipeline_parameters,
)
from semidisent.kfp_pipeline.settings import ClusterSettings

GPU_TASKS = ("exec-search-worker", "exec-train", "exec-evaluate")
CPU_TASKS = ("exec-validate-params", "exec-prepare", "exec-search-init", "exec-report")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, Kubernetes platform spec) compiled through the real CLI."""
    out = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    run_cli(
        "pipeline", "compile", "--params", str(ROOT / "params.yaml"), "--out", str(out),
        "--image", "registry.example/semidisent:abc123", "--workers", "3", "--gpus", "2",
        "--data-pvc", "semidisent-data", "--gpu-node-selector", "gpu=l4",
        "--s3-endpoint-url", "http://minio.minio:9000",
        cwd=ROOT, check=True,
    )  # fmt: skip
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_parameter_defaults_are_params_yaml(compiled):
    spec, _ = compiled
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    expected = load_params(ROOT / "params.yaml")
    names = {p.name for p in pipeline_parameters(expected)}
    assert names | {"dvc_remote", "data_version"} == set(inputs)
    defaults = {n: inputs[n]["defaultValue"] for n in names}
    # Decoded and validated as the pipeline's first step does it in the pod.
    assert params_from_arguments(defaults) == expected
    assert inputs["train__beta"] == {
        "defaultValue": expected.train.beta, "isOptional": True, "parameterType": "NUMBER_DOUBLE"
    }  # fmt: skip
    assert inputs["train__steps"]["parameterType"] == "NUMBER_INTEGER"
    assert inputs["eval__metrics"]["parameterType"] == "LIST"
    assert inputs["search__space"]["parameterType"] == "STRUCT"
    # Nullable keys travel as YAML text (KFP has no nullable scalars).
    assert inputs["supervision__n_labels"]["parameterType"] == "STRING"
    assert inputs["tracking__uri"]["defaultValue"] == "null"


def test_dag_search_fans_out_and_train_uses_its_summary(compiled):
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    loop = next(t for t in tasks.values() if "parameterIterator" in t)
    assert loop["parameterIterator"]["items"]["raw"] == "[0, 1, 2]"
    assert loop["iteratorPolicy"]["parallelismLimit"] == 3
    assert "search-init" in loop["dependentTasks"]  # .after(init): workers share its study
    worker_inputs = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert "search-worker" in worker_inputs
    train_inputs = tasks["train"]["inputs"]["artifacts"]
    assert train_inputs["study"]["taskOutputArtifact"]["producerTask"] == "search-summary"
    assert tasks["report"]["dependentTasks"] == ["evaluate", "train"]
    # Typed artifacts: what the Kubeflow UI renders.
    out = {n: spec["components"][f"comp-{n}"]["outputDefinitions"]["artifacts"] for n in (
        "prepare", "train", "evaluate", "report", "search-summary")}  # fmt: skip
    assert out["prepare"]["dataset"]["artifactType"]["schemaTitle"] == "system.Dataset"
    assert out["train"]["model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert out["train"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert out["evaluate"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert out["report"]["report_html"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert out["report"]["report_md"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert out["search-summary"]["search_page"]["artifactType"]["schemaTitle"] == "system.HTML"


def test_gpu_tasks_request_accelerators_and_tolerate_gpu_nodes(compiled):
    spec, k8s = compiled
    executors = spec["deploymentSpec"]["executors"]
    for name in GPU_TASKS:
        res = executors[name]["container"]["resources"]
        assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert res["accelerator"]["resourceCount"] == "2"
        assert res["resourceCpuRequest"] == "4" and res["resourceMemoryRequest"] == "16Gi"
        assert k8s[name]["tolerations"] == [
            {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
        ]
        assert k8s[name]["nodeSelector"]["labels"] == {"gpu": "l4"}
    for name in CPU_TASKS:
        res = executors[name]["container"]["resources"]
        assert "accelerator" not in res and res["resourceCpuRequest"] == "2"
        assert "tolerations" not in k8s[name]
    for name, ex in executors.items():
        c = ex["container"]
        assert c["image"] == "registry.example/semidisent:abc123", name
        # The image has kfp: nothing is pip-installed in the pod.
        assert "pip install" not in " ".join(c["command"]), name


def test_credentials_come_from_secrets_and_the_pvc_is_mounted(compiled):
    spec, k8s = compiled
    for name in GPU_TASKS + CPU_TASKS + ("exec-search-summary",):
        secrets = {s["secretName"]: s for s in k8s[name]["secretAsEnv"]}
        envs = {e["envVar"] for e in secrets["semidisent-s3"]["keyToEnv"]}
        assert envs == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert "MLFLOW_TRACKING_TOKEN" in {
            e["envVar"] for e in secrets["semidisent-mlflow"]["keyToEnv"]
        }
        assert k8s[name]["pvcMount"][0]["mountPath"] == "/data"
        assert k8s[name]["pvcMount"][0]["constant"] == "semidisent-data"
        env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][name][
            "container"].get("env", [])}  # fmt: skip
        assert env["AWS_ENDPOINT_URL"] == "http://minio.minio:9000"
    # The Optuna RDB URL (with its password) only where the study is used.
    for name in ("exec-search-init", "exec-search-worker", "exec-search-summary"):
        optuna = [s for s in k8s[name]["secretAsEnv"] if s["secretName"] == "semidisent-optuna"]
        assert optuna[0]["keyToEnv"] == [
            {"envVar": "SEMIDISENT_SEARCH_STORAGE", "secretKey": "url"}
        ]
    assert "semidisent-optuna" not in {s["secretName"] for s in k8s["exec-train"]["secretAsEnv"]}
    # Training checkpoints on the PVC: a retried pod resumes.
    train = spec["root"]["dag"]["tasks"]["train"]
    assert train["inputs"]["parameters"]["checkpoint_root"]["runtimeValue"]["constant"] == (
        "/data/checkpoints"
    )
    assert train["retryPolicy"]["maxRetryCount"] == 2
    # No credential anywhere in the spec.
    text = yaml.safe_dump(spec)
    assert "testing" not in text and "SECRET_ACCESS_KEY:" not in text


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.replacement_rate=1.5", ["train.replacement_rate = 1.5", "a number in [0, 1]"]),
        ("train.beta_typo=2", ["unknown parameter train.beta_typo", "allowed keys in train"]),
        ("trian.beta=2", ["unknown parameter trian.beta", "sections are data, supervision"]),
    ],
)
def test_invalid_parameters_are_refused_before_compiling(tmp_path, override, expected):
    out = tmp_path / "pipeline.yaml"
    proc = run_cli("pipeline", "compile", "-S", override, "--out", str(out), cwd=ROOT)
    assert proc.returncode == 2
    for part in expected:  # the key, the value, what is allowed
        assert part in proc.stderr
    assert not out.exists()


def test_pipeline_arguments_round_trip_and_are_validated_in_the_pod():
    base = load_params(ROOT / "params.yaml")
    run = load_params(
        ROOT / "params.yaml",
        ["train.beta=8", "supervision.n_labels=null", "supervision.label_fraction=0.01",
         "supervision.observed_factors=[shape, scale]", "supervision.labeller=partial"],
    )  # fmt: skip
    assert params_from_arguments(arguments(run)) == run
    changed = changed_arguments(base, run)
    assert changed == {
        "train__beta": 8.0,
        "supervision__n_labels": "null",
        "supervision__label_fraction": "0.01",
        "supervision__labeller": "partial",
        "supervision__observed_factors": '["shape", "scale"]',
    }
    # What a run submitted by other means (API, UI) gets from the validation step.
    with pytest.raises(ParamsError, match=r"train\.replacement_rate = 1\.5.*\[0, 1\]"):
        params_from_arguments({"train__replacement_rate": 1.5})
    with pytest.raises(ParamsError, match="unknown pipeline parameter train__betta"):
        params_from_arguments({"train__betta": 1.0})


def test_local_settings_compile_for_cpu(tmp_path):
    from semidisent.kfp_pipeline.compile import compile_pipeline

    out = compile_pipeline(
        load_params(ROOT / "params.yaml"), ClusterSettings(gpus=0), tmp_path / "p.yaml"
    )
    spec, platform = yaml.safe_load_all(Path(out).read_text())
    for ex in spec["deploymentSpec"]["executors"].values():
        assert "accelerator" not in ex["container"].get("resources", {})
    assert all(
        "tolerations" not in e for e in platform["platforms"]["kubernetes"]["deploymentSpec"][
            "executors"].values()
    )  # fmt: skip
