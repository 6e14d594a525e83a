"""The compiled Kubeflow study pipeline: one GPU pod per training unit of the plan (ParallelFor
over the unit ids, K models batched per unit), the resolved study as a parameter, a report step
that collects every unit's results; a document changed after compiling is refused in the pod."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from conftest import ROOT, run_cli
from semidisent.study.definition import StudyError, load_study, study_from_document

DEFINITION = ROOT / "studies" / "label_replacement.yaml"


@pytest.fixture(scope="module")
def plan():
    """The ci preset planned for GPU pods (the paper preset's 24 units of K = 5 / 10 are checked
    in test_study_definition.py; compiling it is the same code, 4x slower)."""
    return load_study(DEFINITION, "ci", ROOT / "params.yaml", batch="group")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any]]:
    out = tmp_path_factory.mktemp("study_kfp") / "study_pipeline.yaml"
    run_cli(
        "study", "compile", "--definition", str(DEFINITION), "--params", str(ROOT / "params.yaml"),
        "--preset", "ci", "--out", str(out), "--image", "registry.example/semidisent:abc",
        "--gpus", "1", "--data-pvc", "semidisent-data", "--parallel", "6",
        cwd=ROOT, check=True,
    )  # fmt: skip
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_units_fan_out_over_gpu_pods(compiled, plan):
    spec, executors = compiled
    tasks = spec["root"]["dag"]["tasks"]
    loop = next(t for t in tasks.values() if "parameterIterator" in t)
    assert json.loads(loop["parameterIterator"]["items"]["raw"]) == [u.id for u in plan.units]
    # one labelled pool x 2 structures: the baseline's 2 seeds, the two labelled_recon: all arms
    assert sorted(len(u.models) for u in plan.units) == [2, 4]
    assert loop["iteratorPolicy"]["parallelismLimit"] == 6
    assert "study-init" in loop["dependentTasks"]
    unit_exec = spec["deploymentSpec"]["executors"]["exec-study-unit"]["container"]
    assert unit_exec["image"] == "registry.example/semidisent:abc"
    assert unit_exec["resources"]["accelerator"]["resourceCount"] == "1"
    assert "accelerator" not in spec["deploymentSpec"]["executors"]["exec-study-report"][
        "container"
    ].get("resources", {})
    # the units keep their state on the PVC (a retried pod resumes its checkpoints)
    assert executors["exec-study-unit"]["pvcMount"][0]["mountPath"] == "/data"
    unit_inputs = spec["components"]["comp-study-unit"]["inputDefinitions"]["parameters"]
    assert set(unit_inputs) >= {"unit", "work_root", "dvc_remote", "data_version"}
    # the report step collects every unit's results
    report = spec["components"]["comp-study-report"]["inputDefinitions"]["artifacts"]
    assert report["units"]["isArtifactList"] is True
    assert tasks["study-report"]["dependentTasks"] == [loop_name(tasks), "study-init"]


def loop_name(tasks: dict[str, Any]) -> str:
    return next(n for n, t in tasks.items() if "parameterIterator" in t)


def test_the_study_document_parameter_is_the_compiled_plan(compiled, plan):
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"study_document", "dvc_remote", "data_version"}
    study = study_from_document(json.loads(params["study_document"]["defaultValue"]))
    assert study.digest == plan.digest
    assert [u.id for u in study.units] == [u.id for u in plan.units]
    assert study.models[0].params.train.steps == 30


def test_a_document_changed_after_compiling_is_refused(tmp_path):
    from semidisent.kfp_pipeline.study import init_study

    study = load_study(DEFINITION, "ci", ROOT / "params.yaml", ["tracking.enabled=false"])
    units = json.dumps([u.id for u in study.units])
    doc = study.document()
    assert init_study(json.dumps(doc), tmp_path / "ok", units) == ""  # untracked: no parent
    assert (tmp_path / "ok" / "study.json").exists()
    doc["definition"]["training_seeds"] = [0, 1, 2]
    with pytest.raises(StudyError, match="compile the pipeline again"):
        init_study(json.dumps(doc), tmp_path / "changed", units)


def test_without_gpus_every_model_is_its_own_unit(tmp_path):
    from semidisent.kfp_pipeline.settings import ClusterSettings
    from semidisent.kfp_pipeline.study import compile_study_pipeline

    study = load_study(DEFINITION, "ci", ROOT / "params.yaml", batch="one")
    out = compile_study_pipeline(
        study, ClusterSettings(image="x/y:1", gpus=0), tmp_path / "p.yaml", parallelism=2
    )
    spec, _ = yaml.safe_load_all(out.read_text())
    loop = next(t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    assert len(json.loads(loop["parameterIterator"]["items"]["raw"])) == len(study.models) == 6
