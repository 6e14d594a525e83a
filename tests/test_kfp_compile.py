"""The compiled Kubeflow pipeline: structure, GPUs, secrets, tolerations, PVC, parameter
defaults (= params.yaml), and the refusal of invalid parameters before anything is compiled.

Compile-and-inspect only: the IR YAML is what a cluster receives, so checking it is checking
what the cluster will do with resources and Kubernetes settings (kfp.local ignores them)."""

from __future__ import annotations

import json
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
from semidisent.tracking.environment import git_state

GPU_TASKS = ("exec-search-worker", "exec-train", "exec-evaluate")
CPU_TASKS = ("exec-validate-params", "exec-prepare", "exec-search-init", "exec-report")
# The tasks that read the study (the first step checks its storage).
STUDY_TASKS = ("exec-validate-params", "exec-search-init", "exec-search-worker",
               "exec-search-summary")  # fmt: skip


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, Kubernetes platform spec) compiled through the real CLI."""
    out = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    run_cli(
        "pipeline", "compile", "--params", str(ROOT / "params.yaml"), "--out", str(out),
        "--image", "registry.example/semidisent:abc123", "--workers", "3", "--gpus", "2",
        "--data-pvc", "semidisent-data", "--gpu-node-selector", "gpu=l4",
        "--s3-endpoint-url", "http://minio.minio:9000", "--gpu-timeout", "12",
        cwd=ROOT, check=True,
    )  # fmt: skip
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_the_ir_parses_into_kfps_protobuf_messages(compiled):
    """What the backend does first with the IR: strict parsing into PipelineSpec and, per
    executor, KubernetesExecutorConfig (an unknown or misspelt field is an error)."""
    from google.protobuf import json_format
    from kfp.kubernetes.kubernetes_executor_config_pb2 import KubernetesExecutorConfig
    from kfp.pipeline_spec.pipeline_spec_pb2 import PipelineSpec

    spec, k8s = compiled
    message = json_format.ParseDict(spec, PipelineSpec())
    assert message.pipeline_info.name == "semidisent"
    assert set(message.deployment_spec.fields["executors"].struct_value.fields) == set(
        GPU_TASKS + CPU_TASKS + ("exec-search-summary",)
    )
    for name, config in k8s.items():
        parsed = json_format.ParseDict(config, KubernetesExecutorConfig())
        names = {s.secret_name_parameter.runtime_value.constant.string_value or s.secret_name
                 for s in parsed.secret_as_env}  # fmt: skip
        assert {"semidisent-s3", "semidisent-mlflow"} <= names, name
        assert all(s.optional for s in parsed.secret_as_env)  # KFP backend >= 2.15
        (cm,) = parsed.config_map_as_env
        assert cm.config_map_name == "semidisent-tracking" and cm.optional
        assert cm.key_to_env[0].env_var == "MLFLOW_TRACKING_URI"
        assert parsed.active_deadline_seconds == (12 * 3600 if name in GPU_TASKS else 0)


def test_side_effect_steps_are_never_cached_and_prepare_is(compiled):
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    loop = next(t for t in tasks.values() if "parameterIterator" in t)
    worker = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]["search-worker"]
    assert tasks["prepare"]["cachingOptions"] == {"enableCache": True}
    for task in [*(tasks[n] for n in tasks if n != "prepare" and "cachingOptions" in tasks[n]),
                 worker]:  # fmt: skip
        assert not task["cachingOptions"].get("enableCache"), task["taskInfo"]
    # prepare's inputs: the data parameters (no run id) and the DVC coordinates
    inputs = tasks["prepare"]["inputs"]
    assert "artifacts" not in inputs
    assert inputs["parameters"]["data_params"]["taskOutputParameter"]["producerTask"] == (
        "validate-params"
    )
    # the study's data hash comes from prepare's output, not from downloading the dataset
    init = tasks["search-init"]["inputs"]
    assert init["parameters"]["content_sha256"]["taskOutputParameter"]["producerTask"] == "prepare"
    assert "dataset" not in init.get("artifacts", {})


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
        assert res["resourceCpuLimit"] == "4" and res["resourceMemoryLimit"] == "16Gi"
        # the step knows it asked for GPUs: `device: auto` without one is an error there
        env = {e["name"]: e["value"] for e in executors[name]["container"]["env"]}
        assert json.loads(env["SEMIDISENT_CLUSTER"])["gpus"] == 2
        assert k8s[name]["tolerations"] == [
            {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
        ]
        assert k8s[name]["nodeSelector"]["labels"] == {"gpu": "l4"}
    for name in CPU_TASKS:
        res = executors[name]["container"]["resources"]
        assert "accelerator" not in res and res["resourceCpuRequest"] == "2"
        assert res["resourceCpuLimit"] == "2" and res["resourceMemoryLimit"] == "8Gi"
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
    # The Optuna RDB URL (with its password) only where the study is used (and checked).
    for name in STUDY_TASKS:
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
    # What the pipeline was compiled from, which its first step compares with the image's.
    env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][
        "exec-validate-params"]["container"]["env"]}  # fmt: skip
    source = json.loads(env["SEMIDISENT_CLUSTER"])["source"]
    assert source["version"] == __import__("semidisent").__version__
    assert source["commit"] == git_state(ROOT).get("git_commit", "")
    assert "compiled from semidisent" in spec["pipelineInfo"]["description"]


@pytest.mark.parametrize("backend", ["2.10", "2.4"])
def test_compile_for_an_older_backend(tmp_path, backend):
    """Backends before 2.15 refuse `optional` on env sources, before 2.5 the parameterised
    names (their drivers unmarshal the platform spec strictly): left out for them."""
    out = tmp_path / "old.yaml"
    run_cli(
        "pipeline", "compile", "--image", "registry.example/semidisent:abc123", "--out", str(out),
        "--kfp-backend", backend, "--data-pvc", "semidisent-data", cwd=ROOT, check=True,
    )  # fmt: skip
    _, platform = yaml.safe_load_all(out.read_text())
    text = json.dumps(platform)
    assert '"optional"' not in text
    assert ("NameParameter" in text) == (backend == "2.10")
    from google.protobuf import json_format
    from kfp.kubernetes.kubernetes_executor_config_pb2 import KubernetesExecutorConfig

    for config in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        parsed = json_format.ParseDict(config, KubernetesExecutorConfig())
        assert {s.secret_name for s in parsed.secret_as_env} >= {"semidisent-s3"}
        assert parsed.pvc_mount[0].constant == "semidisent-data"


def test_compile_refuses_the_placeholder_image(tmp_path):
    out = tmp_path / "p.yaml"
    proc = run_cli("pipeline", "compile", "--out", str(out), cwd=ROOT)
    assert proc.returncode == 2 and not out.exists()
    assert "placeholder" in proc.stderr and "--image" in proc.stderr


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
        load_params(ROOT / "params.yaml"),
        ClusterSettings(gpus=0, image="registry.example/semidisent:abc123"),
        tmp_path / "p.yaml",
    )
    spec, platform = yaml.safe_load_all(Path(out).read_text())
    for ex in spec["deploymentSpec"]["executors"].values():
        assert "accelerator" not in ex["container"].get("resources", {})
    assert all(
        "tolerations" not in e for e in platform["platforms"]["kubernetes"]["deploymentSpec"][
            "executors"].values()
    )  # fmt: skip
