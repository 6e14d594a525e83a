"""Study definitions: the project's presets load and plan as documented; bad definitions are
refused at load time, before anything runs, with one line each (the CLI exits 2 with one line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cli
from semidisent.study.definition import (
    StudyError,
    describe,
    load_study,
    study_from_document,
)

DEFINITION = ROOT / "studies" / "label_replacement.yaml"
PARAMS = ROOT / "params.yaml"

BASE = {
    "name": "t",
    "arms": {
        "baseline": {"replacement_rate": 0.0, "labelled_recon": "replaced"},
        "lr_p1": {"replacement_rate": 1.0, "labelled_recon": "all"},
    },
    "baseline": "baseline",
    "training_seeds": [0, 1],
    "metrics": ["mig", "dci"],
}


def _write(tmp_path: Path, **changes) -> Path:
    doc = {**BASE, **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _refused(tmp_path: Path, overrides=(), **changes) -> str:
    with pytest.raises(StudyError) as e:
        load_study(_write(tmp_path, **changes), None, PARAMS, overrides)
    message = str(e.value)
    assert "\n" not in message  # one line
    return message


def test_the_project_presets_plan_as_documented():
    cpu = load_study(DEFINITION, "cpu", PARAMS)
    assert cpu.preset == "cpu" and cpu.batch == "one" and cpu.definition.jobs == 2
    assert len(cpu.models) == 24 and len(cpu.units) == 24  # 3 arms x 8 seeds, one model a unit
    assert [m.arm for m in cpu.models[:3]] == ["baseline", "recon_p0", "lr_p1"]  # whole pairs
    assert set(cpu.definition.training_seeds).isdisjoint({0, 1, 2})  # not the pilot's seeds
    p = cpu.models[0].params
    assert (p.train.steps, p.eval.sample_scale, p.eval.few_label) == (900, 1.0, True)
    assert p.eval.random_baseline == ()  # one random encoder per pool, not per model
    assert cpu.comparisons() == [
        ("recon_p0", "baseline"),
        ("lr_p1", "baseline"),
        ("lr_p1", "recon_p0"),
    ]
    paper = load_study(DEFINITION, "paper", PARAMS, batch="group")
    assert len(paper.models) == 180 and paper.models[0].params.train.steps == 300_000
    assert {c.id for c in paper.cells} == {
        "n100-perfect",
        "n100-binned",
        "n1000-perfect",
        "n1000-binned",
    }
    # One batched run per labelled pool and structure: the baseline (labelled_recon replaced)
    # alone, the two labelled_recon: all arms (only the replacement rate differs) together.
    assert sorted(len(u.models) for u in paper.units) == [5] * 12 + [10] * 12
    ci = load_study(DEFINITION, "ci", PARAMS)
    assert len(ci.models) == 6 and ci.models[0].params.train.steps == 30
    assert "6 models" in describe(ci)


def test_command_line_overrides_win_over_the_definitions():
    study = load_study(DEFINITION, "cpu", PARAMS, ["train.steps=20", "eval.sample_scale=0.02"])
    p = study.models[0].params
    assert (p.train.steps, p.eval.sample_scale, p.train.checkpoint_every) == (20, 0.02, 300)


def test_a_document_rebuilds_the_same_plan():
    study = load_study(DEFINITION, "ci", PARAMS, ["train.beta=2", "study.training_seeds=[4, 5]"])
    # through JSON with sorted keys, as study.json and the pipeline's parameter hold it
    again = study_from_document(json.loads(json.dumps(study.document(), sort_keys=True)))
    assert list(again.definition.arms) == ["baseline", "recon_p0", "lr_p1"]
    assert [m.id for m in again.models] == [m.id for m in study.models]
    assert [u.id for u in again.units] == [u.id for u in study.units]
    assert again.digest == study.digest
    assert {m.training_seed for m in study.models} == {4, 5}
    assert study.models[0].params.train.beta == 2


def test_the_cell_seeds_and_arm_make_each_models_parameters(tmp_path):
    study = load_study(
        _write(
            tmp_path, n_labels=[100], labeller=["binned"], beta=[1.0, 8.0], supervision_seeds=[3]
        ),
        None,
        PARAMS,
    )
    m = study.model("lr_p1/n100-binned-b8/s3-t1")
    sup, train = m.params.supervision, m.params.train
    assert (sup.n_labels, sup.labeller, sup.seed) == (100, "binned", 3)
    assert (train.seed, train.beta, train.replacement_rate, train.labelled_recon) == (
        1,
        8.0,
        1.0,
        "all",
    )
    # the arms of one pair share the labelled pool
    assert m.prepared_id == study.model("baseline/n100-binned-b8/s3-t1").prepared_id


@pytest.mark.parametrize(
    ("arms", "expected"),
    [
        (
            {"lr_p1": {"replacment_rate": 1.0}},
            "unknown key 'replacment_rate' (did you mean replacement_rate?)",
        ),
        ({"lr_p1": {"train.replacment_rate": 1.0}}, "did you mean train.replacement_rate?"),
        ({"lr_p1": {"modle.name": "s2vae"}}, "unknown key 'modle.name' (did you mean model?)"),
        ({"lr_p1": {"supervision.n_labels": 100}}, "is not an arm key"),
        ({"lr_p1": {"seed": 3}}, "train.seed is the study's training_seeds axis"),
        ({"lr_p1": {"train.device": "cpu"}}, "says how a run executes"),
        ({"lr_p1": {"s2_factor_vae.gamma": 20.0}}, "applies to model.name = s2_factor_vae"),
    ],
)
def test_unknown_or_misplaced_arm_keys_are_refused(tmp_path, arms, expected):
    message = _refused(tmp_path, arms={**BASE["arms"], **arms})
    assert "study arm 'lr_p1'" in message and expected in message


def test_an_arm_identical_to_the_baseline_or_to_another_arm_is_refused(tmp_path):
    same = {"baseline": {"replacement_rate": 0.0}, "copy": {"train.replacement_rate": 0}}
    message = _refused(tmp_path, arms=same, overrides=["train.labelled_recon=replaced"])
    assert message.startswith("study arm 'copy' is identical to the baseline 'baseline'")
    # the same parameters through the base: replacement_rate 0 is the arm's only override
    message = _refused(
        tmp_path, arms={**BASE["arms"], "twin": {"replacement_rate": 1.0, "labelled_recon": "all"}}
    )
    assert "study arm 'twin' is identical to arm 'lr_p1'" in message


def test_a_paired_cell_with_one_seed_is_refused(tmp_path):
    message = _refused(tmp_path, training_seeds=[0])
    assert "study cell n1000-perfect has 1 seed pair" in message
    assert "a paired test needs at least 2" in message
    # the same through a -S override, and accepted without the paired test
    assert "1 seed pair" in _refused(tmp_path, overrides=["study.training_seeds=[5]"])
    study = load_study(_write(tmp_path, training_seeds=[0], paired=False), None, PARAMS)
    assert len(study.models) == 2


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"baseline": "base"}, "study baseline 'base' is not one of its arms"),
        ({"arms": {"baseline": {}}}, "needs at least one arm besides the baseline"),
        ({"seeds": [1]}, "unknown parameter study.seeds"),
        ({"labeller": ["oracle"]}, "study.labeller[0] = 'oracle'"),
        ({"metrics": ["mig", "foo"]}, "invalid parameter study.metrics"),
        ({"training_seeds": [1, 1]}, "without repeated values"),
        ({"comparisons": [["lr_p1", "nope"]]}, "'nope' is not an arm"),
        ({"n_labels": [800_000]}, "cell n800000-perfect"),
        ({"overrides": {"train.bta": 2}}, "did you mean train.beta?"),
    ],
)
def test_bad_definitions_are_refused_with_one_line(tmp_path, changes, expected):
    with pytest.raises(Exception) as e:  # StudyError, or the schema's ParamsError
        load_study(_write(tmp_path, **changes), None, PARAMS)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_unknown_preset_is_refused(tmp_path):
    with pytest.raises(StudyError, match="unknown study preset 'gpu'; this definition has: ci"):
        load_study(_write(tmp_path, presets={"ci": {}}), "gpu", PARAMS)


def test_the_cli_refuses_a_bad_definition_with_one_line_before_anything_runs(tmp_path):
    path = _write(tmp_path, arms={**BASE["arms"], "lr_p1": {"replacment_rate": 1.0}})
    proc = run_cli(
        "study",
        "run",
        "--definition",
        str(path),
        "--params",
        str(PARAMS),
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("semidisent study: error: study arm 'lr_p1'")
    assert not (tmp_path / "out").exists()
    ok = run_cli(
        "study",
        "plan",
        "--definition",
        str(DEFINITION),
        "--params",
        str(PARAMS),
        "--preset",
        "cpu",
        "-v",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert "24 models in 24 training units" in ok.stdout and "unit u" in ok.stdout


def test_the_report_gives_what_differs_between_arms_by_arm():
    """The Training line names each arm's family and steps where they differ, and beta only for
    the arms of the semi-supervised family (St-RKM has none); one value where the arms agree."""
    from semidisent.study.report import _training, design

    strkm = design(load_study(ROOT / "studies" / "strkm.yaml", "cpu", PARAMS))
    line = _training(strkm)
    assert line.startswith(
        "families by arm (`beta_vae` s2vae, `st_rkm_deterministic` st_rkm, `st_rkm_noisy_u` "
        "st_rkm, `st_rkm_split` st_rkm), steps by arm (`beta_vae` 790, "
        "`st_rkm_deterministic` 860, `st_rkm_noisy_u` 950, `st_rkm_split` 690)"
    ), line
    assert set(strkm["beta"]) == {"beta_vae"}
    assert line.endswith(f"beta by arm (`beta_vae` {strkm['beta']['beta_vae']})")
    same = design(load_study(DEFINITION, "cpu", PARAMS))
    assert _training(same) == (
        f"{same['steps']} steps, batch {same['batch_size']} + {same['labelled_batch_size']} "
        f"labelled, beta {same['beta']}"
    )
    assert same["families"] == "s2vae" and not isinstance(same["steps"], dict)
