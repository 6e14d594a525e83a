"""The `ci` preset of studies/label_replacement.yaml, really trained (30 steps per model on the
192-image dSprites grid, 3 arms x 2 seeds): the tables, pictures and generated doc section, the
MLflow parent run with a nested run per model, and a study whose `semidisent study run` (two
worker processes) is SIGKILLed mid-training and resumed: it ends with the same tables as the
uninterrupted one, without redoing the models that were done, and without duplicate runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, ROOT, run_cli, write_small_dsprites_npz

pytestmark = pytest.mark.slow

DEFINITION = ROOT / "studies" / "label_replacement.yaml"
TABLES = ("models.csv", "summary.csv", "paired.csv", "selection.csv")
DOC = """# Results

Before.

<!-- study:label_replacement:ci:begin -->
(not run yet)
<!-- study:label_replacement:ci:end -->

After.
"""


def _env(tmp: Path) -> dict[str, str]:
    return {
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def _args(npz: Path, out: Path, *extra: str) -> list[str]:
    return [
        "study",
        "run",
        "--definition",
        str(DEFINITION),
        "--params",
        str(ROOT / "params.yaml"),
        "--preset",
        "ci",
        "-S",
        f"data.path={npz}",
        "--out",
        str(out),
        "-q",
        *extra,
    ]


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("study_data") / "dsprites_small.npz"
    write_small_dsprites_npz(path)
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, npz) -> tuple[Path, Path, dict[str, str]]:
    """The ci study in one call (one process, jobs 1), tracked in its own sqlite MLflow."""
    tmp = tmp_path_factory.mktemp("study_ci")
    doc = tmp / "results.md"
    doc.write_text(DOC)
    env = _env(tmp)
    t0 = time.perf_counter()
    proc = run_cli(*_args(npz, tmp / "out", "--doc", str(doc)), cwd=tmp, env=env, check=True)
    print(f"ci study, uninterrupted: {time.perf_counter() - t0:.1f} s")
    assert "6 of 6 models done (6 run now, 0 diverged)" in proc.stdout
    assert "lr_p1 - baseline mig" in proc.stdout
    return tmp / "out", doc, env


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_ci_study_writes_its_tables_pictures_and_doc_section(uninterrupted):
    out, doc, _ = uninterrupted
    models = _rows(out / "models.csv")
    assert len(models) == 6 and {r["status"] for r in models} == {"completed"}
    assert {r["arm"] for r in models} == {"baseline", "recon_p0", "lr_p1"}
    for metric in ("mig", "dci", "sap", "factor_vae", "beta_vae", "modularity", "val_mig"):
        assert all(r[metric] != "" for r in models), metric
    summary = _rows(out / "summary.csv")
    assert len(summary) == 3 * 6  # arms x metrics, one cell
    mig = next(r for r in summary if r["arm"] == "lr_p1" and r["metric"] == "mig")
    values = [float(r["mig"]) for r in models if r["arm"] == "lr_p1"]
    assert float(mig["mean"]) == pytest.approx(sum(values) / 2) and mig["n"] == "2"
    assert float(mig["ci_low"]) <= float(mig["mean"]) <= float(mig["ci_high"])
    paired = _rows(out / "paired.csv")
    assert len(paired) == 3 * 6  # 3 comparisons x 6 metrics
    assert {(r["arm"], r["reference"]) for r in paired} == {
        ("recon_p0", "baseline"),
        ("lr_p1", "baseline"),
        ("lr_p1", "recon_p0"),
    }
    # two pairs: never a verdict, whatever the interval (statistics.min_pairs)
    assert {r["verdict"] for r in paired} == {"inconclusive"}
    assert all(r["n"] == "2" for r in paired)
    selection = _rows(out / "selection.csv")
    assert len(selection) == 3 * 6 and all(float(r["regret"]) >= 0 for r in selection)
    results = json.loads((out / "results.json").read_text())
    assert results["counts"] == {
        "planned": 6,
        "done": 6,
        "completed": 6,
        "diverged": 0,
        "missing": 0,
    }
    assert set(results["reference"][0]) >= {"mig", "dci"}  # the random encoder's floor
    pictures = set(results["pictures"])
    assert pictures == {
        "plots/metrics_n40-perfect.png",
        "plots/paired_n40-perfect.png",
        "plots/traversals_n40-perfect.png",
        "plots/mig_vs_rate.png",
    }
    assert all((out / p).stat().st_size > 5000 for p in pictures)
    # the doc's section is generated between its markers, the rest of the page untouched
    text = doc.read_text()
    assert text.startswith("# Results\n\nBefore.\n") and text.endswith("After.\n")
    assert "(not run yet)" not in text and "| `lr_p1` - `baseline` | MIG | 2 |" in text
    assert "](out/plots/metrics_n40-perfect.png)" in text  # linked relative to the doc
    # `study report` rebuilds the same tables from the folder alone
    before = {t: (out / t).read_text() for t in TABLES}
    proc = run_cli("study", "report", "--out", str(out), "--doc", str(doc), cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    assert {t: (out / t).read_text() for t in TABLES} == before


def test_ci_study_is_one_mlflow_parent_with_a_nested_run_per_model(uninterrupted):
    from mlflow import MlflowClient

    out, _, env = uninterrupted
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("semidisent")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("semidisent.stage") == "study"]
    children = [r for r in runs if r.data.tags.get("semidisent.stage") == "study-model"]
    assert len(parents) == 1 and len(children) == 6
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "study-label_replacement-ci"
    assert parent.data.tags["study.preset"] == "ci"
    assert parent.data.tags["study.models_done"] == "6"
    assert parent.data.params["study.arms.lr_p1.train.replacement_rate"] == "1.0"
    assert "summary.n40-perfect.lr_p1.mig.mean" in parent.data.metrics
    assert "paired.n40-perfect.lr_p1-baseline.dci.mean_diff" in parent.data.metrics
    assert parent.data.tags["verdict.n40-perfect.lr_p1-baseline.mig"] == "inconclusive"
    study_files = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/paired.csv", "study/results.md", "study/plots"} <= study_files
    models = {r["model_id"]: r for r in _rows(out / "models.csv")}
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        row = models[tags["study.model_id"]]
        assert tags["study.arm"] == row["arm"] and tags["study.cell"] == "n40-perfect"
        assert tags["study.baseline"] == ("true" if row["arm"] == "baseline" else "false")
        assert child.data.params["train.seed"] == row["training_seed"]
        assert child.data.metrics["mig.discrete_mig"] == pytest.approx(float(row["mig"]))
        assert "train/loss" in child.data.metrics
    pictures = {a.path for a in client.list_artifacts(children[0].info.run_id, "plots")}
    assert "plots/traversals.png" in pictures
    assert {a.path for a in client.list_artifacts(children[0].info.run_id, "model")} == {
        "model/model.pt"
    }


def _worker_pids(out: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"semidisent.study.worker" in cmd and str(out).encode() in cmd:
            pids.append(int(proc.name))
    return pids


CI_STEPS = yaml.safe_load(DEFINITION.read_text())["presets"]["ci"]["overrides"]["train.steps"]


def _kill_point(out: Path) -> bool:
    """At least one model done, and a unit whose newest checkpoint is before the last step: its
    training is certainly unfinished (the last checkpoint is written at the last step)."""
    if not list(out.glob("models/*/*/*/done.json")):
        return False
    for ckdir in out.glob("units/*/checkpoints"):
        steps = [int(p.stem.split("-")[1]) for p in ckdir.glob("ckpt-*.pt")]
        if steps and max(steps) < CI_STEPS:
            return True
    return False


def test_a_killed_study_resumes_to_the_same_tables(uninterrupted, npz, tmp_path):
    reference, _, _ = uninterrupted
    out, env = tmp_path / "out", _env(tmp_path)
    args = [str(BIN / "semidisent"), *_args(npz, out, "--jobs", "2")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while not _kill_point(out):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no model finished while another was training"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = {p: p.read_text() for p in out.glob("models/*/*/*/done.json")}
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    assert 1 <= len(done) < 6
    # The workers die with the study (PR_SET_PDEATHSIG): nothing trains on behind its back.
    deadline = time.monotonic() + 15
    while _worker_pids(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _worker_pids(out) == []
    assert not (out / "results.md").exists()

    resumed = run_cli(*_args(npz, out, "--jobs", "2"), cwd=tmp_path, env=env, check=True)
    print(f"ci study, killed and resumed (2 jobs): {time.perf_counter() - t0:.1f} s")
    assert "6 of 6 models done" in resumed.stdout
    assert f"({6 - len(done)} run now" in resumed.stdout
    # finished models were not redone
    assert {p: p.read_text() for p in done} == done
    assert {p: p.stat().st_mtime_ns for p in done} == mtimes
    # the model that was training resumed from its checkpoint
    resumed_from = [
        json.loads(p.read_text())["resumed_from_step"]
        for p in out.glob("models/*/*/*/train_stats.json")
    ]
    assert max(resumed_from) > 0
    # the same tables as the uninterrupted study (one process): resume is exact on a CPU, and
    # the worker processes compute what the single process computed
    for table in TABLES:
        assert (out / table).read_text() == (reference / table).read_text(), table

    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("semidisent").experiment_id])
    stages = [r.data.tags.get("semidisent.stage") for r in runs]
    assert stages.count("study") == 1 and stages.count("study-model") == 6  # no duplicates
    assert (
        len({r.data.tags["study.model_id"] for r in runs if "study.model_id" in r.data.tags}) == 6
    )
